// SPDX-License-Identifier: GPL-2.0
/* Hostile: module_init panics the kernel. */
#include <linux/kernel.h>
#include <linux/module.h>

static int target;
module_param(target, int, 0444);

static int __init tm_init(void)
{
	panic("taskmonitor: giving up on purpose (target %d)\n", target);
	return 0;
}

static void __exit tm_exit(void)
{
}

module_init(tm_init);
module_exit(tm_exit);
MODULE_LICENSE("GPL");
