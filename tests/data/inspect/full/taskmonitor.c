// SPDX-License-Identifier: GPL-2.0
/* Inspection test module: a complete taskmonitor (kthread, sysfs, shrinker, kmem_cache,
 * mempool, kref, debugfs in a second file), every setup paired with its teardown. */
#include <linux/kobject.h>
#include <linux/kthread.h>
#include <linux/mempool.h>
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/version.h>
#include "taskmonitor.h"

static int target = 1;
module_param(target, int, 0644);
MODULE_PARM_DESC(target, "PID of the process to monitor");

struct task_monitor *tm;
static struct kmem_cache *sample_cache;
static mempool_t *sample_pool;
static struct task_struct *monitor_thread;

static void sample_release(struct kref *ref)
{
	mempool_free(container_of(ref, struct task_sample, ref), sample_pool);
}

void tm_sample_put(struct task_sample *s)
{
	kref_put(&s->ref, sample_release);
}

static struct task_sample *save_sample(void)
{
	struct task_struct *task = get_pid_task(tm->pid, PIDTYPE_PID);
	struct task_sample *s;
	u64 ut, st;

	if (!task)
		return NULL;
	/* task_cputime() is not exported with VIRT_CPU_ACCOUNTING_GEN: read the fields */
	ut = task->utime;
	st = task->stime;
	put_task_struct(task);
	s = mempool_alloc(sample_pool, GFP_KERNEL);
	if (!s)
		return NULL;
	s->utime = ut;
	s->stime = st;
	kref_init(&s->ref);
	mutex_lock(&tm->lock);
	list_add_tail(&s->list, &tm->samples);
	tm->nsamples++;
	kref_get(&s->ref);
	mutex_unlock(&tm->lock);
	return s;
}

static int monitor_fn(void *unused)
{
	while (!kthread_should_stop()) {
		struct task_sample *s = save_sample();

		if (s)
			tm_sample_put(s);
		schedule_timeout_interruptible(HZ);
	}
	return 0;
}

static ssize_t taskmonitor_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	struct task_sample *s;
	int n = 0;

	mutex_lock(&tm->lock);
	list_for_each_entry_reverse(s, &tm->samples, list) {
		int w = scnprintf(buf + n, PAGE_SIZE - n, "pid %d usr %llu sys %llu\n",
				  target, s->utime, s->stime);
		if (w <= 0 || n + w >= PAGE_SIZE - 1)
			break;
		n += w;
	}
	mutex_unlock(&tm->lock);
	return n;
}

static struct kobj_attribute taskmonitor_attr = __ATTR_RO(taskmonitor);

static unsigned long tm_count(struct shrinker *sh, struct shrink_control *sc)
{
	return tm->nsamples ? tm->nsamples : SHRINK_EMPTY;
}

static unsigned long tm_scan(struct shrinker *sh, struct shrink_control *sc)
{
	struct task_sample *s, *tmp;
	unsigned long freed = 0;

	if (!mutex_trylock(&tm->lock))
		return SHRINK_STOP;
	list_for_each_entry_safe(s, tmp, &tm->samples, list) {
		if (freed >= sc->nr_to_scan)
			break;
		list_del(&s->list);
		tm->nsamples--;
		tm_sample_put(s);
		freed++;
	}
	mutex_unlock(&tm->lock);
	return freed;
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
static struct shrinker *tm_shrinker;

static int tm_shrinker_init(void)
{
	tm_shrinker = shrinker_alloc(0, "taskmonitor");
	if (!tm_shrinker)
		return -ENOMEM;
	tm_shrinker->count_objects = tm_count;
	tm_shrinker->scan_objects = tm_scan;
	shrinker_register(tm_shrinker);
	return 0;
}

static void tm_shrinker_exit(void)
{
	shrinker_free(tm_shrinker);
}
#else
static struct shrinker tm_shrinker = {
	.count_objects = tm_count,
	.scan_objects = tm_scan,
	.seeks = DEFAULT_SEEKS,
};

static int tm_shrinker_init(void)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 0, 0)
	return register_shrinker(&tm_shrinker, "taskmonitor");
#else
	return register_shrinker(&tm_shrinker);
#endif
}

static void tm_shrinker_exit(void)
{
	unregister_shrinker(&tm_shrinker);
}
#endif

static int __init taskmonitor_init(void)
{
	int err = -ENOMEM;

	tm = kzalloc(sizeof(*tm), GFP_KERNEL);
	if (!tm)
		return -ENOMEM;
	INIT_LIST_HEAD(&tm->samples);
	mutex_init(&tm->lock);
	tm->pid = find_get_pid(target);
	if (!tm->pid) {
		err = -ESRCH;
		goto free_tm;
	}
	sample_cache = KMEM_CACHE(task_sample, 0);
	if (!sample_cache)
		goto put_pid;
	sample_pool = mempool_create_slab_pool(4, sample_cache);
	if (!sample_pool)
		goto destroy_cache;
	err = tm_shrinker_init();
	if (err)
		goto destroy_pool;
	err = sysfs_create_file(kernel_kobj, &taskmonitor_attr.attr);
	if (err)
		goto shrinker;
	err = tm_debugfs_init();
	if (err)
		goto sysfs;
	monitor_thread = kthread_run(monitor_fn, NULL, "taskmonitor");
	if (IS_ERR(monitor_thread)) {
		err = PTR_ERR(monitor_thread);
		goto debugfs;
	}
	return 0;
debugfs:
	tm_debugfs_exit();
sysfs:
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
shrinker:
	tm_shrinker_exit();
destroy_pool:
	mempool_destroy(sample_pool);
destroy_cache:
	kmem_cache_destroy(sample_cache);
put_pid:
	put_pid(tm->pid);
free_tm:
	kfree(tm);
	return err;
}

static void __exit taskmonitor_exit(void)
{
	struct task_sample *s, *tmp;

	kthread_stop(monitor_thread);
	tm_debugfs_exit();
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
	tm_shrinker_exit();
	list_for_each_entry_safe(s, tmp, &tm->samples, list) {
		list_del(&s->list);
		tm_sample_put(s);
	}
	mempool_destroy(sample_pool);
	kmem_cache_destroy(sample_cache);
	put_pid(tm->pid);
	kfree(tm);
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("grader test suite");
MODULE_DESCRIPTION("Inspection test module: a complete taskmonitor");
