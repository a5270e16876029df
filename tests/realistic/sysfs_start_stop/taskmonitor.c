// SPDX-License-Identifier: GPL-2.0
/*
 * taskmonitor (TP 06 + TP 07)
 *
 * From TP 06 we kept the sysfs file to pause and resume the monitoring:
 *	echo stop  > /sys/kernel/taskmonitor
 *	echo start > /sys/kernel/taskmonitor
 * The history is read from debugfs (exercise 6):
 *	cat /sys/kernel/debug/taskmonitor
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/pid.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/string.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/shrinker.h>

MODULE_DESCRIPTION("Process monitor");
MODULE_AUTHOR("Ines Haddad");
MODULE_LICENSE("GPL");

static unsigned short target = 1;
module_param(target, ushort, 0660);
MODULE_PARM_DESC(target, "The pid of the process to monitor");

struct task_sample {
	struct list_head list;
	struct kref kref;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct pid *pid;
	struct list_head head;
	int nsamples;
	struct mutex m;
};

static struct task_monitor tm;
static struct task_struct *monitor_thread;
static DEFINE_MUTEX(thread_mutex);	/* monitor_thread: start/stop */
static struct kmem_cache *cache;
static mempool_t *pool;
static struct dentry *dfile;

static void free_sample(struct kref *kref)
{
	mempool_free(container_of(kref, struct task_sample, kref), pool);
}

static bool get_sample(struct task_sample *ts)
{
	struct task_struct *t = get_pid_task(tm.pid, PIDTYPE_PID);

	if (!t)
		return false;
	task_cputime_adjusted(t, &ts->utime, &ts->stime);
	put_task_struct(t);
	return true;
}

static struct task_sample *save_sample(void)
{
	struct task_sample *ts = mempool_alloc(pool, GFP_KERNEL);

	if (!ts)
		return NULL;
	if (!get_sample(ts)) {
		mempool_free(ts, pool);
		return NULL;
	}
	kref_init(&ts->kref);
	kref_get(&ts->kref);
	mutex_lock(&tm.m);
	list_add_tail(&ts->list, &tm.head);
	tm.nsamples++;
	mutex_unlock(&tm.m);
	return ts;
}

static int monitor_fn(void *unused)
{
	struct task_sample *ts;

	while (!kthread_should_stop()) {
		ts = save_sample();
		if (ts)
			kref_put(&ts->kref, free_sample);
		msleep(1000);
	}
	return 0;
}

static int monitor_start(void)
{
	struct task_struct *t;

	if (monitor_thread)
		return 0;
	t = kthread_run(monitor_fn, NULL, "monitor_fn");
	if (IS_ERR(t))
		return PTR_ERR(t);
	monitor_thread = t;
	return 0;
}

static void monitor_stop(void)
{
	if (!monitor_thread)
		return;
	kthread_stop(monitor_thread);
	monitor_thread = NULL;
}

/* sysfs: write only */
static ssize_t taskmonitor_store(struct kobject *kobj,
				 struct kobj_attribute *attr,
				 const char *buf, size_t count)
{
	int ret = 0;

	mutex_lock(&thread_mutex);
	if (sysfs_streq(buf, "start"))
		ret = monitor_start();
	else if (sysfs_streq(buf, "stop"))
		monitor_stop();
	else
		ret = -EINVAL;
	mutex_unlock(&thread_mutex);
	return ret ? ret : count;
}

static struct kobj_attribute taskmonitor_attr = __ATTR_WO(taskmonitor);

/* shrinker */
static unsigned long count_samples(struct shrinker *s,
				   struct shrink_control *sc)
{
	return tm.nsamples;
}

static unsigned long scan_samples(struct shrinker *s,
				  struct shrink_control *sc)
{
	struct task_sample *ts;
	unsigned long n = 0;

	if (!mutex_trylock(&tm.m))
		return SHRINK_STOP;
	while (n < sc->nr_to_scan && !list_empty(&tm.head)) {
		ts = list_first_entry(&tm.head, struct task_sample, list);
		list_del(&ts->list);
		tm.nsamples--;
		kref_put(&ts->kref, free_sample);
		n++;
	}
	mutex_unlock(&tm.m);
	return n;
}

static struct shrinker sampler_shrinker = {
	.count_objects = count_samples,
	.scan_objects = scan_samples,
	.seeks = DEFAULT_SEEKS,
};

/* debugfs */
static int taskmonitor_show(struct seq_file *m, void *v)
{
	struct task_sample *ts;
	pid_t nr = pid_nr(tm.pid);

	mutex_lock(&tm.m);
	list_for_each_entry(ts, &tm.head, list)
		seq_printf(m, "pid %d usr %llu sys %llu\n", nr, ts->utime,
			   ts->stime);
	mutex_unlock(&tm.m);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(taskmonitor);

static int __init monitor_init(void)
{
	int err;

	tm.pid = find_get_pid(target);
	if (!tm.pid) {
		pr_warn("taskmonitor: no process %u\n", target);
		return -EINVAL;
	}
	INIT_LIST_HEAD(&tm.head);
	mutex_init(&tm.m);

	cache = KMEM_CACHE(task_sample, 0);
	if (!cache) {
		err = -ENOMEM;
		goto fail_pid;
	}
	pool = mempool_create_slab_pool(8, cache);
	if (!pool) {
		err = -ENOMEM;
		goto fail_cache;
	}
	err = register_shrinker(&sampler_shrinker, "taskmonitor");
	if (err)
		goto fail_pool;
	err = sysfs_create_file(kernel_kobj, &taskmonitor_attr.attr);
	if (err)
		goto fail_shrinker;
	dfile = debugfs_create_file("taskmonitor", 0444, NULL, NULL,
				    &taskmonitor_fops);
	err = monitor_start();
	if (err)
		goto fail_files;
	pr_info("taskmonitor: monitoring %u\n", target);
	return 0;

fail_files:
	debugfs_remove(dfile);
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
fail_shrinker:
	unregister_shrinker(&sampler_shrinker);
fail_pool:
	mempool_destroy(pool);
fail_cache:
	kmem_cache_destroy(cache);
fail_pid:
	put_pid(tm.pid);
	return err;
}

static void __exit monitor_exit(void)
{
	struct task_sample *ts, *tmp;

	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
	mutex_lock(&thread_mutex);
	monitor_stop();
	mutex_unlock(&thread_mutex);
	debugfs_remove(dfile);
	unregister_shrinker(&sampler_shrinker);

	list_for_each_entry_safe(ts, tmp, &tm.head, list) {
		list_del(&ts->list);
		kref_put(&ts->kref, free_sample);
	}
	mempool_destroy(pool);
	kmem_cache_destroy(cache);
	put_pid(tm.pid);
	pr_info("taskmonitor: unloaded\n");
}

module_init(monitor_init);
module_exit(monitor_exit);
