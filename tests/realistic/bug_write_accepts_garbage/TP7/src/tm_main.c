#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/mm.h>
#include <linux/sysfs.h>
#include <linux/kobject.h>

#include "tm.h"

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Lucas Fabre");
MODULE_DESCRIPTION("TP7: taskmonitor");

static int target;
module_param(target, int, 0444);

LIST_HEAD(tm_list);
DEFINE_MUTEX(tm_list_lock);

static struct kmem_cache *cache;
static mempool_t *pool;
static struct task_struct *sampler;
static atomic_t nb_total = ATOMIC_INIT(0);

static void release(struct kref *kref)
{
	mempool_free(container_of(kref, struct task_sample, kref), pool);
}

void tm_sample_put(struct task_sample *s)
{
	kref_put(&s->kref, release);
}

static struct task_sample *save_sample(struct task_monitor *tm)
{
	struct task_struct *task;
	struct task_sample *s;
	u64 ut, st;

	rcu_read_lock();
	task = pid_task(tm->pid, PIDTYPE_PID);
	if (task)
		get_task_struct(task);
	rcu_read_unlock();
	if (!task)
		return NULL;
	task_cputime_adjusted(task, &ut, &st);
	put_task_struct(task);

	s = mempool_alloc(pool, GFP_KERNEL);
	if (!s)
		return NULL;
	s->utime = div_u64(ut, NSEC_PER_MSEC);
	s->stime = div_u64(st, NSEC_PER_MSEC);
	kref_init(&s->kref);
	kref_get(&s->kref);

	mutex_lock(&tm->lock);
	list_add_tail(&s->list, &tm->samples);
	tm->nb_samples++;
	atomic_inc(&nb_total);
	mutex_unlock(&tm->lock);
	return s;
}

static int sampler_fn(void *data)
{
	struct task_monitor *tm;
	struct task_sample *s;

	while (!kthread_should_stop()) {
		mutex_lock(&tm_list_lock);
		list_for_each_entry(tm, &tm_list, list) {
			s = save_sample(tm);
			if (s)
				tm_sample_put(s);
		}
		mutex_unlock(&tm_list_lock);
		schedule_timeout_interruptible(HZ);
	}
	return 0;
}

static struct task_monitor *find(pid_t pid)
{
	struct task_monitor *tm;

	list_for_each_entry(tm, &tm_list, list)
		if (pid_nr(tm->pid) == pid)
			return tm;
	return NULL;
}

int tm_monitor_add(pid_t pid)
{
	struct task_monitor *tm;
	struct pid *p = find_get_pid(pid);

	if (!p)
		return -ESRCH;
	mutex_lock(&tm_list_lock);
	if (find(pid)) {
		mutex_unlock(&tm_list_lock);
		put_pid(p);
		return -EEXIST;
	}
	tm = kzalloc(sizeof(*tm), GFP_KERNEL);
	if (!tm) {
		mutex_unlock(&tm_list_lock);
		put_pid(p);
		return -ENOMEM;
	}
	tm->pid = p;
	INIT_LIST_HEAD(&tm->samples);
	mutex_init(&tm->lock);
	list_add_tail(&tm->list, &tm_list);
	mutex_unlock(&tm_list_lock);
	return 0;
}

static void free_monitor(struct task_monitor *tm)
{
	struct task_sample *s, *tmp;

	mutex_lock(&tm->lock);
	list_for_each_entry_safe(s, tmp, &tm->samples, list) {
		list_del(&s->list);
		atomic_dec(&nb_total);
		tm_sample_put(s);
	}
	mutex_unlock(&tm->lock);
	put_pid(tm->pid);
	kfree(tm);
}

int tm_monitor_del(pid_t pid)
{
	struct task_monitor *tm;

	mutex_lock(&tm_list_lock);
	tm = find(pid);
	if (tm)
		list_del(&tm->list);
	mutex_unlock(&tm_list_lock);
	if (!tm)
		return -ENOENT;
	free_monitor(tm);
	return 0;
}

/* sysfs: the last samples of each monitored task */
static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_monitor *tm;
	struct task_sample *s;
	int len = 0, nb_tasks = 0, max, i;

	mutex_lock(&tm_list_lock);
	list_for_each_entry(tm, &tm_list, list)
		nb_tasks++;
	list_for_each_entry(tm, &tm_list, list) {
		/* every task gets the same number of lines of at most 64 bytes */
		max = PAGE_SIZE / 64 / nb_tasks;
		mutex_lock(&tm->lock);
		i = 0;
		list_for_each_entry(s, &tm->samples, list) {
			if (i++ < tm->nb_samples - max)
				continue;
			len += scnprintf(buf + len, PAGE_SIZE - len,
					 "pid %d usr %llu sys %llu\n",
					 pid_nr(tm->pid), s->utime, s->stime);
		}
		mutex_unlock(&tm->lock);
	}
	mutex_unlock(&tm_list_lock);
	return len;
}

static struct kobj_attribute tm_attr = __ATTR_RO(taskmonitor);

static unsigned long tm_count(struct shrinker *s, struct shrink_control *sc)
{
	return atomic_read(&nb_total);
}

static unsigned long tm_scan(struct shrinker *s, struct shrink_control *sc)
{
	struct task_monitor *tm;
	struct task_sample *ts, *tmp;
	unsigned long freed = 0;

	if (!mutex_trylock(&tm_list_lock))
		return SHRINK_STOP;
	list_for_each_entry(tm, &tm_list, list) {
		mutex_lock(&tm->lock);
		list_for_each_entry_safe(ts, tmp, &tm->samples, list) {
			if (freed >= sc->nr_to_scan)
				break;
			list_del(&ts->list);
			tm->nb_samples--;
			atomic_dec(&nb_total);
			tm_sample_put(ts);
			freed++;
		}
		mutex_unlock(&tm->lock);
	}
	mutex_unlock(&tm_list_lock);
	return freed;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count,
	.scan_objects = tm_scan,
	.seeks = DEFAULT_SEEKS,
};

static void free_all(void)
{
	struct task_monitor *tm, *tmp;

	mutex_lock(&tm_list_lock);
	list_for_each_entry_safe(tm, tmp, &tm_list, list) {
		list_del(&tm->list);
		free_monitor(tm);
	}
	mutex_unlock(&tm_list_lock);
}

static int __init tm_init(void)
{
	int ret;

	cache = KMEM_CACHE(task_sample, SLAB_HWCACHE_ALIGN);
	if (!cache)
		return -ENOMEM;
	pool = mempool_create_slab_pool(16, cache);
	if (!pool) {
		ret = -ENOMEM;
		goto err_cache;
	}
	ret = tm_monitor_add(target);
	if (ret)
		goto err_pool;
	ret = register_shrinker(&tm_shrinker, "taskmonitor");
	if (ret)
		goto err_list;
	ret = sysfs_create_file(kernel_kobj, &tm_attr.attr);
	if (ret)
		goto err_shrinker;
	ret = tm_debugfs_create();
	if (ret)
		goto err_sysfs;
	sampler = kthread_run(sampler_fn, NULL, "tm_sampler");
	if (IS_ERR(sampler)) {
		ret = PTR_ERR(sampler);
		goto err_debugfs;
	}
	return 0;

err_debugfs:
	tm_debugfs_remove();
err_sysfs:
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
err_shrinker:
	unregister_shrinker(&tm_shrinker);
err_list:
	free_all();
err_pool:
	mempool_destroy(pool);
err_cache:
	kmem_cache_destroy(cache);
	return ret;
}

static void __exit tm_exit(void)
{
	kthread_stop(sampler);
	tm_debugfs_remove();
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
	unregister_shrinker(&tm_shrinker);
	free_all();
	mempool_destroy(pool);
	kmem_cache_destroy(cache);
}

module_init(tm_init);
module_exit(tm_exit);
