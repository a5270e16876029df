// SPDX-License-Identifier: GPL-2.0
/* Hostile: module_init never returns, in an uninterruptible sleep (insmod stays in D state). */
#include <linux/module.h>
#include <linux/wait.h>

static int target;
module_param(target, int, 0444);

static DECLARE_WAIT_QUEUE_HEAD(nobody_wakes_this);

static int __init tm_init(void)
{
	pr_info("taskmonitor: waiting for something that never happens\n");
	wait_event(nobody_wakes_this, false);
	return 0;
}

static void __exit tm_exit(void)
{
}

module_init(tm_init);
module_exit(tm_exit);
MODULE_LICENSE("GPL");
