// SPDX-License-Identifier: GPL-2.0
/*
 * taskmonitor: CPU and memory statistics of a process, kept in a list.
 * PNL TP 07 -- Sarah Benali -- exercises 1 and 2.
 *
 * cat /sys/kernel/taskmonitor:
 *   pid 94 usr 260000000 sys 16000000 vm_total 245 vm_stack 33 vm_data 42
 * (times in ns, memory in pages)
 */
#include <linux/init.h>
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/shrinker.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>

static int target = 1;
module_param(target, int, 0444);
MODULE_PARM_DESC(target, "pid to monitor");

static bool debug;
module_param(debug, bool, 0644);
MODULE_PARM_DESC(debug, "print every sample in the kernel log");

struct task_sample {
	struct list_head list;
	u64 utime;
	u64 stime;
	unsigned long total_vm;
	unsigned long stack_vm;
	unsigned long data_vm;
};

struct task_monitor {
	struct pid *pid;
	struct mutex lock;
	struct list_head samples;
	unsigned long nr_samples;
};

static struct task_monitor tm;
static struct task_struct *kthread;

static bool get_sample(struct task_sample *ts)
{
	struct task_struct *task;
	struct mm_struct *mm;

	task = get_pid_task(tm.pid, PIDTYPE_PID);
	if (!task)
		return false;
	task_cputime_adjusted(task, &ts->utime, &ts->stime);
	mm = get_task_mm(task);
	if (mm) {
		ts->total_vm = mm->total_vm;
		ts->stack_vm = mm->stack_vm;
		ts->data_vm = mm->data_vm;
		mmput(mm);
	} else {
		ts->total_vm = ts->stack_vm = ts->data_vm = 0;
	}
	put_task_struct(task);
	return true;
}

static void save_sample(void)
{
	struct task_sample *ts = kmalloc(sizeof(*ts), GFP_KERNEL);

	if (!ts)
		return;
	if (!get_sample(ts)) {
		kfree(ts);
		return;
	}
	if (debug)
		pr_info("taskmonitor: pid %d usr %llu sys %llu\n",
			pid_nr(tm.pid), ts->utime, ts->stime);
	mutex_lock(&tm.lock);
	list_add_tail(&ts->list, &tm.samples);
	tm.nr_samples++;
	mutex_unlock(&tm.lock);
}

static int monitor_fn(void *unused)
{
	while (!kthread_should_stop()) {
		save_sample();
		msleep(1000);
	}
	return 0;
}

static int print_sample(char *buf, size_t size, pid_t nr, struct task_sample *ts)
{
	return snprintf(buf, size,
			"pid %d usr %llu sys %llu vm_total %lu vm_stack %lu vm_data %lu\n",
			nr, ts->utime, ts->stime, ts->total_vm, ts->stack_vm,
			ts->data_vm);
}

static ssize_t taskmonitor_show(struct kobject *kobj, struct kobj_attribute *attr,
				char *buf)
{
	struct task_sample *ts;
	pid_t nr = pid_nr(tm.pid);
	size_t total = 0;
	unsigned long skip = 0;
	ssize_t len = 0;

	mutex_lock(&tm.lock);
	/* how many of the newest samples fit in a page? */
	list_for_each_entry_reverse(ts, &tm.samples, list) {
		size_t l = print_sample(NULL, 0, nr, ts);

		if (total + l > PAGE_SIZE - 1)
			break;
		total += l;
		skip++;
	}
	skip = tm.nr_samples - skip;
	list_for_each_entry(ts, &tm.samples, list) {
		if (skip) {
			skip--;
			continue;
		}
		len += print_sample(buf + len, PAGE_SIZE - len, nr, ts);
	}
	mutex_unlock(&tm.lock);
	return len;
}

static struct kobj_attribute taskmonitor_attribute = __ATTR_RO(taskmonitor);

static unsigned long tm_count_objects(struct shrinker *s,
				      struct shrink_control *sc)
{
	return tm.nr_samples ? tm.nr_samples : SHRINK_EMPTY;
}

static unsigned long tm_scan_objects(struct shrinker *s,
				     struct shrink_control *sc)
{
	unsigned long freed = 0;
	struct task_sample *ts;

	if (!mutex_trylock(&tm.lock))
		return SHRINK_STOP;
	while (freed < sc->nr_to_scan && !list_empty(&tm.samples)) {
		ts = list_first_entry(&tm.samples, struct task_sample, list);
		list_del(&ts->list);
		kfree(ts);
		tm.nr_samples--;
		freed++;
	}
	mutex_unlock(&tm.lock);
	return freed;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count_objects,
	.scan_objects = tm_scan_objects,
	.seeks = DEFAULT_SEEKS,
};

static int __init taskmonitor_init(void)
{
	int ret;

	tm.pid = find_get_pid(target);
	if (!tm.pid)
		return -ESRCH;
	mutex_init(&tm.lock);
	INIT_LIST_HEAD(&tm.samples);
	tm.nr_samples = 0;

	ret = register_shrinker(&tm_shrinker, "taskmonitor");
	if (ret)
		goto err_pid;
	ret = sysfs_create_file(kernel_kobj, &taskmonitor_attribute.attr);
	if (ret)
		goto err_shrinker;
	kthread = kthread_run(monitor_fn, NULL, "taskmonitor");
	if (IS_ERR(kthread)) {
		ret = PTR_ERR(kthread);
		goto err_sysfs;
	}
	return 0;

err_sysfs:
	sysfs_remove_file(kernel_kobj, &taskmonitor_attribute.attr);
err_shrinker:
	unregister_shrinker(&tm_shrinker);
err_pid:
	put_pid(tm.pid);
	return ret;
}

static void __exit taskmonitor_exit(void)
{
	struct task_sample *ts, *next;

	kthread_stop(kthread);
	sysfs_remove_file(kernel_kobj, &taskmonitor_attribute.attr);
	unregister_shrinker(&tm_shrinker);
	list_for_each_entry_safe(ts, next, &tm.samples, list) {
		list_del(&ts->list);
		kfree(ts);
	}
	put_pid(tm.pid);
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Sarah Benali");
MODULE_DESCRIPTION("CPU and memory usage history of a process");
