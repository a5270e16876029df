// SPDX-License-Identifier: GPL-2.0
/*
 * Grader helper: busy-waits `delay_us` microseconds right after every mutex_unlock() called
 * from the module at `base` of `size` bytes (the student's module, as /proc/modules gives
 * them), in tasks named `comm` only (the grader's readers), to widen the window in which code
 * that keeps pointers past its unlock races with a concurrent free. The student's module is
 * not modified: a kretprobe on mutex_unlock filters on the caller's return address.
 */
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/delay.h>
#include <linux/ptrace.h>
#include <linux/atomic.h>
#include <linux/sched.h>
#include <linux/string.h>

static unsigned long base, size;
module_param(base, ulong, 0444);
module_param(size, ulong, 0444);
/* Only in tasks of this name (the grader's readers), if set: not in the module's own kthread
 * nor in the shrinker's caller. */
static char comm[TASK_COMM_LEN];
module_param_string(comm, comm, sizeof(comm), 0444);
static unsigned int delay_us = 1000;
module_param(delay_us, uint, 0644);
static atomic_t hits = ATOMIC_INIT(0);
module_param_named(hits, hits.counter, int, 0444);

static int entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	unsigned long ra = *(unsigned long *)regs->sp;	/* return address, at function entry */

	if (ra < base || ra - base >= size)
		return 1;	/* not called from the module: no return handler */
	if (comm[0] && strncmp(current->comm, comm, TASK_COMM_LEN))
		return 1;
	return 0;
}

static int ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	atomic_inc(&hits);
	udelay(delay_us);
	return 0;
}

static struct kretprobe rp = {
	.kp.symbol_name = "mutex_unlock",
	.entry_handler = entry,
	.handler = ret,
	.maxactive = 16,
};

static int __init di_init(void)
{
	if (!base || !size)
		return -EINVAL;
	return register_kretprobe(&rp);
}

static void __exit di_exit(void)
{
	unregister_kretprobe(&rp);
}

module_init(di_init);
module_exit(di_exit);
MODULE_LICENSE("GPL");
