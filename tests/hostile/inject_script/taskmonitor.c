// SPDX-License-Identifier: GPL-2.0
/*
 * Hostile: markup everywhere a report shows student text.
 * <script>alert("from the source")</script> <img src=x onerror=alert(1)>
 */
#include <linux/bug.h>
#include <linux/module.h>

#warning "<script>alert('from a compiler warning')</script>"

static int target;
module_param(target, int, 0444);

static int __init tm_init(void)
{
	pr_err("taskmonitor: <script>alert('from the kernel log')</script><img src=x onerror=alert(2)>\n");
	BUG();
	return 0;
}

static void __exit tm_exit(void)
{
}

module_init(tm_init);
module_exit(tm_exit);
MODULE_LICENSE("GPL");
