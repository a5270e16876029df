// SPDX-License-Identifier: GPL-2.0
/*
 * taskmonitor -- TP 07 PNL -- Arthur Lemaire
 * Exercises 1 to 5.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/pid.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/kref.h>
#include <linux/mm.h>
#include <linux/sysfs.h>
#include <linux/kobject.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Arthur Lemaire");

static int target;
module_param(target, int, 0644);

#define MAX_SHOWN 80

struct task_sample {
	struct list_head list;
	struct kref ref;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct pid *pid;
	struct list_head samples;
	unsigned long nb;
	struct mutex lock;
};

static struct task_monitor mon;
static struct task_struct *sampler;
static struct kmem_cache *sample_slab;
static mempool_t *sample_pool;

static void sample_free(struct kref *ref)
{
	mempool_free(container_of(ref, struct task_sample, ref), sample_pool);
}

/* the caller gets the sample with a reference of its own */
static struct task_sample *save_sample(void)
{
	struct task_struct *task;
	struct task_sample *ts;

	task = get_pid_task(mon.pid, PIDTYPE_PID);
	if (!task)
		return NULL;
	ts = mempool_alloc(sample_pool, GFP_KERNEL);
	if (ts) {
		task_cputime_adjusted(task, &ts->utime, &ts->stime);
		kref_init(&ts->ref);
		kref_get(&ts->ref);
		mutex_lock(&mon.lock);
		list_add_tail(&ts->list, &mon.samples);
		mon.nb++;
		mutex_unlock(&mon.lock);
	}
	put_task_struct(task);
	return ts;
}

static int sampler_fn(void *unused)
{
	struct task_sample *ts;

	while (!kthread_should_stop()) {
		ts = save_sample();
		if (ts) {
			pr_debug("taskmonitor: usr %llu sys %llu\n", ts->utime, ts->stime);
			kref_put(&ts->ref, sample_free);
		}
		ssleep(1);
	}
	return 0;
}

/*
 * The last MAX_SHOWN samples (80 lines of at most 50 bytes fit in a page).
 * The list is only locked while we pick them, so that the shrinker can run
 * while we print.
 */
static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_sample *shown[MAX_SHOWN], *ts;
	int n = 0, i;
	ssize_t len = 0;

	mutex_lock(&mon.lock);
	list_for_each_entry_reverse(ts, &mon.samples, list) {
		if (n == MAX_SHOWN)
			break;
		shown[n++] = ts;
	}
	mutex_unlock(&mon.lock);
	msleep(20);

	for (i = n - 1; i >= 0; i--)
		len += scnprintf(buf + len, PAGE_SIZE - len,
				 "pid %d usr %llu sys %llu\n", pid_nr(mon.pid),
				 shown[i]->utime, shown[i]->stime);
	return len;
}

static struct kobj_attribute tm_attr = __ATTR_RO(taskmonitor);

static unsigned long tm_count(struct shrinker *s, struct shrink_control *sc)
{
	return mon.nb;
}

static unsigned long tm_scan(struct shrinker *s, struct shrink_control *sc)
{
	struct task_sample *ts, *next;
	unsigned long freed = 0;

	if (!mutex_trylock(&mon.lock))
		return SHRINK_STOP;
	list_for_each_entry_safe(ts, next, &mon.samples, list) {
		if (freed >= sc->nr_to_scan)
			break;
		list_del(&ts->list);
		mon.nb--;
		kref_put(&ts->ref, sample_free);
		freed++;
	}
	mutex_unlock(&mon.lock);
	return freed;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count,
	.scan_objects = tm_scan,
	.seeks = DEFAULT_SEEKS,
};

static int __init tm_init(void)
{
	int err;

	mon.pid = find_get_pid(target);
	if (!mon.pid)
		return -ESRCH;
	INIT_LIST_HEAD(&mon.samples);
	mutex_init(&mon.lock);

	sample_slab = KMEM_CACHE(task_sample, 0);
	if (!sample_slab) {
		err = -ENOMEM;
		goto out_pid;
	}
	sample_pool = mempool_create_slab_pool(4, sample_slab);
	if (!sample_pool) {
		err = -ENOMEM;
		goto out_slab;
	}
	err = register_shrinker(&tm_shrinker, "taskmonitor");
	if (err)
		goto out_pool;
	err = sysfs_create_file(kernel_kobj, &tm_attr.attr);
	if (err)
		goto out_shrinker;
	sampler = kthread_run(sampler_fn, NULL, "taskmonitor");
	if (IS_ERR(sampler)) {
		err = PTR_ERR(sampler);
		goto out_sysfs;
	}
	return 0;

out_sysfs:
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
out_shrinker:
	unregister_shrinker(&tm_shrinker);
out_pool:
	mempool_destroy(sample_pool);
out_slab:
	kmem_cache_destroy(sample_slab);
out_pid:
	put_pid(mon.pid);
	return err;
}

static void __exit tm_exit(void)
{
	struct task_sample *ts, *next;

	kthread_stop(sampler);
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
	unregister_shrinker(&tm_shrinker);
	list_for_each_entry_safe(ts, next, &mon.samples, list) {
		list_del(&ts->list);
		kref_put(&ts->ref, sample_free);
	}
	mempool_destroy(sample_pool);
	kmem_cache_destroy(sample_slab);
	put_pid(mon.pid);
}

module_init(tm_init);
module_exit(tm_exit);
