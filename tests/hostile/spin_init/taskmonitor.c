// SPDX-License-Identifier: GPL-2.0
/* Hostile: module_init busy-waits for an hour without ever yielding the CPU. */
#include <linux/delay.h>
#include <linux/module.h>

static int target;
module_param(target, int, 0444);

static int __init tm_init(void)
{
	unsigned long ms;

	pr_info("taskmonitor: spinning\n");
	for (ms = 0; ms < 3600UL * 1000; ms++)
		mdelay(1);
	return 0;
}

static void __exit tm_exit(void)
{
}

module_init(tm_init);
module_exit(tm_exit);
MODULE_LICENSE("GPL");
