// SPDX-License-Identifier: GPL-2.0
/* taskmonitor -- PNL TP 07, exercises 1 to 4 -- Emma Lambert */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/pid.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/mm.h>
#include <linux/sysfs.h>
#include <linux/kobject.h>

static int target;
module_param(target, int, 0400);

#define POOL_SIZE 10

struct task_sample {
	struct list_head list;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct pid *pid;
	struct list_head list;
	int size;
	struct mutex mutex;
};

static struct task_monitor monitor;
static struct task_struct *monitor_task;
static struct kmem_cache *task_sample_cache;
static mempool_t *task_sample_pool;

static void save_sample(void)
{
	struct task_struct *task;
	struct task_sample *sample;

	task = get_pid_task(monitor.pid, PIDTYPE_PID);
	if (!task)
		return;
	sample = mempool_alloc(task_sample_pool, GFP_KERNEL);
	if (sample) {
		task_cputime_adjusted(task, &sample->utime, &sample->stime);
		mutex_lock(&monitor.mutex);
		list_add_tail(&sample->list, &monitor.list);
		monitor.size++;
		mutex_unlock(&monitor.mutex);
	}
	put_task_struct(task);
}

static int monitor_fn(void *data)
{
	while (!kthread_should_stop()) {
		save_sample();
		msleep(1000);
	}
	return 0;
}

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_sample *sample;
	int count = 0, shown, skip;
	ssize_t len = 0;
	pid_t pid = pid_nr(monitor.pid);

	mutex_lock(&monitor.mutex);
	/* the longest line is "pid 4194304 usr <20 digits> sys <20 digits>\n" */
	shown = min(monitor.size, (int)(PAGE_SIZE / 64));
	skip = monitor.size - shown;
	list_for_each_entry(sample, &monitor.list, list) {
		if (count++ < skip)
			continue;
		len += sysfs_emit_at(buf, len, "pid %d usr %llu sys %llu\n",
				     pid, sample->utime, sample->stime);
	}
	mutex_unlock(&monitor.mutex);
	return len;
}

static struct kobj_attribute taskmonitor_attr = __ATTR_RO(taskmonitor);

static unsigned long monitor_count(struct shrinker *s, struct shrink_control *sc)
{
	return monitor.size;
}

static unsigned long monitor_scan(struct shrinker *s, struct shrink_control *sc)
{
	struct task_sample *sample, *next;
	unsigned long freed = 0;

	if (!mutex_trylock(&monitor.mutex))
		return SHRINK_STOP;
	list_for_each_entry_safe(sample, next, &monitor.list, list) {
		if (freed == sc->nr_to_scan)
			break;
		list_del(&sample->list);
		mempool_free(sample, task_sample_pool);
		monitor.size--;
		freed++;
	}
	mutex_unlock(&monitor.mutex);
	return freed;
}

static struct shrinker monitor_shrinker = {
	.count_objects = monitor_count,
	.scan_objects = monitor_scan,
	.seeks = DEFAULT_SEEKS,
};

static int __init monitor_init(void)
{
	int ret = -ENOMEM;

	monitor.pid = find_get_pid(target);
	if (!monitor.pid)
		return -ESRCH;
	INIT_LIST_HEAD(&monitor.list);
	mutex_init(&monitor.mutex);

	task_sample_cache = KMEM_CACHE(task_sample, 0);
	if (!task_sample_cache)
		goto out_pid;
	task_sample_pool = mempool_create_slab_pool(POOL_SIZE, task_sample_cache);
	if (!task_sample_pool)
		goto out_cache;
	ret = register_shrinker(&monitor_shrinker, "taskmonitor");
	if (ret)
		goto out_pool;
	ret = sysfs_create_file(kernel_kobj, &taskmonitor_attr.attr);
	if (ret)
		goto out_shrinker;
	monitor_task = kthread_run(monitor_fn, NULL, "monitor_fn");
	if (IS_ERR(monitor_task)) {
		ret = PTR_ERR(monitor_task);
		goto out_sysfs;
	}
	return 0;

out_sysfs:
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
out_shrinker:
	unregister_shrinker(&monitor_shrinker);
out_pool:
	mempool_destroy(task_sample_pool);
out_cache:
	kmem_cache_destroy(task_sample_cache);
out_pid:
	put_pid(monitor.pid);
	return ret;
}

static void __exit monitor_exit(void)
{
	struct task_sample *sample, *next;

	kthread_stop(monitor_task);
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
	unregister_shrinker(&monitor_shrinker);

	list_for_each_entry_safe(sample, next, &monitor.list, list) {
		list_del(&sample->list);
		mempool_free(sample, task_sample_pool);
	}
	kmem_cache_destroy(task_sample_cache);
	mempool_destroy(task_sample_pool);
	put_pid(monitor.pid);
}

module_init(monitor_init);
module_exit(monitor_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Emma Lambert");
