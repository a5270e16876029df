// SPDX-License-Identifier: GPL-2.0
/*
 * PNL TP7 - taskmonitor - exercises 1 to 5
 * Julie Perrin
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/kref.h>
#include <linux/mm.h>
#include <linux/sysfs.h>
#include <linux/kobject.h>

static int target;
module_param(target, int, 0644);
MODULE_PARM_DESC(target, "pid of the task to monitor");

struct taskmonitor_sample {
	struct list_head node;
	struct kref kref;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct pid *pid;
	struct list_head samples;
	unsigned int count;
	struct mutex lock;
	struct kmem_cache *cache;
	mempool_t pool;			/* 8 samples always available */
	struct task_struct *thread;
};

static struct task_monitor mon;

static void sample_release(struct kref *kref)
{
	struct taskmonitor_sample *s =
		container_of(kref, struct taskmonitor_sample, kref);

	mempool_free(s, &mon.pool);
}

/* Q5.3: 2 references before display: the list's and ours. */
static struct taskmonitor_sample *save_sample(void)
{
	struct taskmonitor_sample *s;
	struct task_struct *task;

	task = get_pid_task(mon.pid, PIDTYPE_PID);
	if (!task)
		return NULL;
	s = mempool_alloc(&mon.pool, GFP_KERNEL);
	if (s) {
		task_cputime_adjusted(task, &s->utime, &s->stime);
		kref_init(&s->kref);
		kref_get(&s->kref);
		mutex_lock(&mon.lock);
		list_add_tail(&s->node, &mon.samples);
		mon.count++;
		mutex_unlock(&mon.lock);
	}
	put_task_struct(task);
	return s;
}

static int monitor_fn(void *arg)
{
	struct taskmonitor_sample *s;

	while (!kthread_should_stop()) {
		s = save_sample();
		if (s)
			kref_put(&s->kref, sample_release);
		ssleep(1);
	}
	return 0;
}

/*
 * Up to PAGE_SIZE bytes of the newest samples, oldest of them first.
 * The samples to show are taken (with a reference) under the lock and
 * printed after it, so that the shrinker is not blocked by a reader.
 */
#define SHOW_MAX 128

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct taskmonitor_sample **pick, *s;
	pid_t nr = pid_nr(mon.pid);
	int n = 0, i, len = 0, need = 0, l;

	pick = kmalloc_array(SHOW_MAX, sizeof(*pick), GFP_KERNEL);
	if (!pick)
		return -ENOMEM;

	mutex_lock(&mon.lock);
	list_for_each_entry_reverse(s, &mon.samples, node) {
		l = snprintf(NULL, 0, "pid %d usr %llu sys %llu\n", nr,
			     s->utime, s->stime);
		if (n == SHOW_MAX || need + l >= PAGE_SIZE)
			break;
		need += l;
		kref_get(&s->kref);
		pick[n++] = s;
	}
	mutex_unlock(&mon.lock);

	for (i = n - 1; i >= 0; i--) {
		len += sysfs_emit_at(buf, len, "pid %d usr %llu sys %llu\n", nr,
				     pick[i]->utime, pick[i]->stime);
		kref_put(&pick[i]->kref, sample_release);
	}
	kfree(pick);
	return len;
}

static struct kobj_attribute taskmonitor_attr = __ATTR_RO(taskmonitor);

static unsigned long tm_count(struct shrinker *sh, struct shrink_control *sc)
{
	return mon.count;
}

static unsigned long tm_scan(struct shrinker *sh, struct shrink_control *sc)
{
	struct taskmonitor_sample *s, *tmp;
	unsigned long done = 0;

	if (!mutex_trylock(&mon.lock))
		return SHRINK_STOP;
	list_for_each_entry_safe(s, tmp, &mon.samples, node) {
		if (done == sc->nr_to_scan)
			break;
		list_del(&s->node);
		mon.count--;
		kref_put(&s->kref, sample_release);
		done++;
	}
	mutex_unlock(&mon.lock);
	return done;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count,
	.scan_objects = tm_scan,
	.seeks = DEFAULT_SEEKS,
};

static void free_samples(void)
{
	struct taskmonitor_sample *s, *tmp;

	list_for_each_entry_safe(s, tmp, &mon.samples, node) {
		list_del(&s->node);
		kref_put(&s->kref, sample_release);
	}
	mon.count = 0;
}

static int __init taskmonitor_init(void)
{
	struct taskmonitor_sample *probe;
	int err;

	mon.pid = find_get_pid(target);
	if (!mon.pid)
		return -ESRCH;
	INIT_LIST_HEAD(&mon.samples);
	mutex_init(&mon.lock);

	mon.cache = KMEM_CACHE(taskmonitor_sample, 0);
	if (!mon.cache) {
		err = -ENOMEM;
		goto put;
	}
	/* exercise 3, question 1 */
	probe = kmem_cache_alloc(mon.cache, GFP_KERNEL);
	if (probe) {
		pr_info("taskmonitor: sizeof=%zu ksize=%zu\n", sizeof(*probe),
			ksize(probe));
		kmem_cache_free(mon.cache, probe);
	}

	err = mempool_init_slab_pool(&mon.pool, 8, mon.cache);
	if (err)
		goto cache;
	err = register_shrinker(&tm_shrinker, "taskmonitor-samples");
	if (err)
		goto pool;
	err = sysfs_create_file(kernel_kobj, &taskmonitor_attr.attr);
	if (err)
		goto shrinker;

	mon.thread = kthread_run(monitor_fn, NULL, "taskmonitor");
	if (IS_ERR(mon.thread)) {
		err = PTR_ERR(mon.thread);
		goto sysfs;
	}
	return 0;

sysfs:
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
shrinker:
	unregister_shrinker(&tm_shrinker);
pool:
	mempool_exit(&mon.pool);
cache:
	kmem_cache_destroy(mon.cache);
put:
	put_pid(mon.pid);
	return err;
}

static void __exit taskmonitor_exit(void)
{
	kthread_stop(mon.thread);
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
	unregister_shrinker(&tm_shrinker);
	free_samples();
	mempool_exit(&mon.pool);
	kmem_cache_destroy(mon.cache);
	put_pid(mon.pid);
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Julie Perrin");
MODULE_DESCRIPTION("TP7 taskmonitor (exercises 1-5)");
