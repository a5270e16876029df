// SPDX-License-Identifier: GPL-2.0
/* Hostile: once loaded, a kthread floods the kernel log (and the serial console) until rmmod. */
#include <linux/err.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/sched.h>

static int target;
module_param(target, int, 0444);

static struct task_struct *flooder;

static int flood(void *unused)
{
	unsigned long n = 0;

	while (!kthread_should_stop()) {
		pr_info("taskmonitor: flood line %lu for pid %d, padding padding padding padding\n",
			n++, target);
		cond_resched();
	}
	return 0;
}

static int __init tm_init(void)
{
	flooder = kthread_run(flood, NULL, "taskmonitor");
	return PTR_ERR_OR_ZERO(flooder);
}

static void __exit tm_exit(void)
{
	kthread_stop(flooder);
}

module_init(tm_init);
module_exit(tm_exit);
MODULE_LICENSE("GPL");
