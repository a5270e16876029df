/*
 * taskmonitor.c
 * TP7 PNL - exercices 1, 2, 3
 * Romain Girard
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/pid.h>
#include <linux/slab.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/mm.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Romain Girard");

static int target;
module_param(target, int, 0444);
MODULE_PARM_DESC(target, "pid a surveiller");

struct task_sample {
	struct list_head list;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct pid *pid;
	struct list_head samples;
	unsigned long nb_samples;	/* pour le shrinker */
	struct mutex lock;
};

static struct task_monitor *tm;
static struct task_struct *tm_kthread;
static struct kmem_cache *sample_cache;

static struct task_sample *save_sample(void)
{
	struct task_struct *task;
	struct task_sample *s;

	s = kmem_cache_alloc(sample_cache, GFP_KERNEL);
	if (!s)
		return NULL;

	rcu_read_lock();
	task = pid_task(tm->pid, PIDTYPE_PID);
	if (!task) {
		rcu_read_unlock();
		kmem_cache_free(sample_cache, s);
		return NULL;
	}
	task_cputime_adjusted(task, &s->utime, &s->stime);
	rcu_read_unlock();

	mutex_lock(&tm->lock);
	list_add_tail(&s->list, &tm->samples);
	mutex_unlock(&tm->lock);
	return s;
}

static int monitor_fn(void *arg)
{
	while (!kthread_should_stop()) {
		save_sample();
		schedule_timeout_interruptible(msecs_to_jiffies(1000));
	}
	return 0;
}

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_sample *s;
	struct list_head *start;
	int len = 0, sum = 0;
	pid_t nr = pid_nr(tm->pid);

	mutex_lock(&tm->lock);
	/* recule tant que ca rentre dans la page */
	start = &tm->samples;
	while (start->prev != &tm->samples) {
		s = list_entry(start->prev, struct task_sample, list);
		sum += snprintf(NULL, 0, "pid %d usr %llu sys %llu\n", nr,
				s->utime, s->stime);
		if (sum >= PAGE_SIZE)
			break;
		start = start->prev;
	}
	for (; start != &tm->samples; start = start->next) {
		s = list_entry(start, struct task_sample, list);
		len += scnprintf(buf + len, PAGE_SIZE - len,
				 "pid %d usr %llu sys %llu\n", nr, s->utime,
				 s->stime);
	}
	mutex_unlock(&tm->lock);
	return len;
}

static struct kobj_attribute tm_attr = __ATTR_RO(taskmonitor);

static unsigned long tm_count_objects(struct shrinker *sh,
				      struct shrink_control *sc)
{
	return tm->nb_samples;
}

static unsigned long tm_scan_objects(struct shrinker *sh,
				     struct shrink_control *sc)
{
	struct task_sample *s, *tmp;
	unsigned long nb_liberes = 0;

	if (!mutex_trylock(&tm->lock))
		return SHRINK_STOP;
	list_for_each_entry_safe(s, tmp, &tm->samples, list) {
		if (nb_liberes >= sc->nr_to_scan)
			break;
		list_del(&s->list);
		kmem_cache_free(sample_cache, s);
		if (tm->nb_samples > 0)
			tm->nb_samples--;
		nb_liberes++;
	}
	mutex_unlock(&tm->lock);
	return nb_liberes;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count_objects,
	.scan_objects = tm_scan_objects,
	.seeks = DEFAULT_SEEKS,
};

static int __init tm_init(void)
{
	struct task_sample *s;
	int err;

	tm = kzalloc(sizeof(*tm), GFP_KERNEL);
	if (!tm)
		return -ENOMEM;
	tm->pid = find_get_pid(target);
	if (!tm->pid) {
		kfree(tm);
		return -ESRCH;
	}
	INIT_LIST_HEAD(&tm->samples);
	mutex_init(&tm->lock);

	sample_cache = KMEM_CACHE(task_sample, 0);
	if (!sample_cache) {
		err = -ENOMEM;
		goto err_pid;
	}
	s = kmem_cache_alloc(sample_cache, GFP_KERNEL);
	if (s) {
		pr_info("taskmonitor: sizeof %lu ksize %lu\n",
			sizeof(struct task_sample), ksize(s));
		kmem_cache_free(sample_cache, s);
	}

	err = register_shrinker(&tm_shrinker, "tm");
	if (err)
		goto err_cache;
	err = sysfs_create_file(kernel_kobj, &tm_attr.attr);
	if (err)
		goto err_shrinker;
	tm_kthread = kthread_run(monitor_fn, NULL, "taskmonitor");
	if (IS_ERR(tm_kthread)) {
		err = PTR_ERR(tm_kthread);
		goto err_sysfs;
	}
	return 0;

err_sysfs:
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
err_shrinker:
	unregister_shrinker(&tm_shrinker);
err_cache:
	kmem_cache_destroy(sample_cache);
err_pid:
	put_pid(tm->pid);
	kfree(tm);
	return err;
}

static void __exit tm_exit(void)
{
	struct task_sample *s, *tmp;

	kthread_stop(tm_kthread);
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
	unregister_shrinker(&tm_shrinker);
	list_for_each_entry_safe(s, tmp, &tm->samples, list) {
		list_del(&s->list);
		kmem_cache_free(sample_cache, s);
	}
	kmem_cache_destroy(sample_cache);
	put_pid(tm->pid);
	kfree(tm);
}

module_init(tm_init);
module_exit(tm_exit);
