#include <linux/module.h>
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/pid.h>
#include <linux/slab.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Kevin Morel");
MODULE_DESCRIPTION("TP7 ex1");

static int target;
module_param(target, int, 0);

struct task_sample {
	struct list_head list;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct pid *pid;
	struct list_head head;
	int nb_samples;
	struct mutex lock;
};

static struct task_monitor monitor;
static struct task_struct *thread;

static int get_sample(struct task_monitor *tm, struct task_sample *sample)
{
	struct task_struct *task;

	rcu_read_lock();
	task = pid_task(tm->pid, PIDTYPE_PID);
	if (task)
		get_task_struct(task);
	rcu_read_unlock();
	if (!task)
		return 0;
	task_cputime_adjusted(task, &sample->utime, &sample->stime);
	put_task_struct(task);
	return 1;
}

static void save_sample(void)
{
	struct task_sample *sample;

	sample = kmalloc(sizeof(*sample), GFP_KERNEL);
	if (!sample)
		return;
	if (!get_sample(&monitor, sample)) {
		kfree(sample);
		return;
	}
	mutex_lock(&monitor.lock);
	list_add_tail(&sample->list, &monitor.head);
	monitor.nb_samples++;
	mutex_unlock(&monitor.lock);
}

static int monitor_fn(void *data)
{
	while (!kthread_should_stop()) {
		save_sample();
		ssleep(1);
	}
	return 0;
}

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_sample *sample;
	int len = 0;

	mutex_lock(&monitor.lock);
	list_for_each_entry(sample, &monitor.head, list) {
		len += sprintf(buf + len, "pid %d usr %llu sys %llu\n",
			       pid_nr(monitor.pid), sample->utime,
			       sample->stime);
	}
	mutex_unlock(&monitor.lock);
	return len;
}

static struct kobj_attribute taskmonitor_attr = __ATTR_RO(taskmonitor);

static int __init taskmonitor_init(void)
{
	monitor.pid = find_get_pid(target);
	if (!monitor.pid) {
		pr_err("taskmonitor: pid %d not found\n", target);
		return -EINVAL;
	}
	INIT_LIST_HEAD(&monitor.head);
	mutex_init(&monitor.lock);
	monitor.nb_samples = 0;

	if (sysfs_create_file(kernel_kobj, &taskmonitor_attr.attr)) {
		put_pid(monitor.pid);
		return -ENOMEM;
	}
	thread = kthread_run(monitor_fn, NULL, "taskmonitor");
	if (IS_ERR(thread)) {
		sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
		put_pid(monitor.pid);
		return PTR_ERR(thread);
	}
	return 0;
}

static void __exit taskmonitor_exit(void)
{
	struct task_sample *sample, *tmp;

	kthread_stop(thread);
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
	list_for_each_entry_safe(sample, tmp, &monitor.head, list) {
		list_del(&sample->list);
		kfree(sample);
	}
	put_pid(monitor.pid);
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);
