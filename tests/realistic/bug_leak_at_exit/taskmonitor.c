/*
 * TP 07 - Gestion de la memoire - taskmonitor
 * Clara Vidal - exercices 1 a 4
 */
#include <linux/module.h>
#include <linux/init.h>
#include <linux/kthread.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/pid.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/mm.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Clara Vidal");
MODULE_DESCRIPTION("Historique des temps CPU d'un processus");

static int target;
module_param(target, int, 0444);
MODULE_PARM_DESC(target, "pid du processus");

#define NB_RESERVE 6

struct task_sample {
	struct list_head list;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct pid *pid;
	struct list_head samples;
	int nb_samples;
	struct mutex mutex;
};

static struct task_monitor tm;
static struct task_struct *tm_thread;
static struct kmem_cache *tm_cache;
static mempool_t *tm_pool;

static void save_sample(void)
{
	struct task_struct *task;
	struct task_sample *s;

	s = mempool_alloc(tm_pool, GFP_KERNEL);
	if (!s)
		return;

	rcu_read_lock();
	task = pid_task(tm.pid, PIDTYPE_PID);
	if (task)
		task_cputime_adjusted(task, &s->utime, &s->stime);
	rcu_read_unlock();
	if (!task) {
		mempool_free(s, tm_pool);
		return;
	}

	mutex_lock(&tm.mutex);
	list_add_tail(&s->list, &tm.samples);
	tm.nb_samples++;
	mutex_unlock(&tm.mutex);
}

static int tm_thread_fn(void *data)
{
	while (!kthread_should_stop()) {
		save_sample();
		schedule_timeout_interruptible(HZ);
	}
	return 0;
}

/* affiche les derniers echantillons dans la limite de PAGE_SIZE */
static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_sample *s;
	pid_t nr = pid_nr(tm.pid);
	int taille = 0, debut, i = 0, len = 0;

	mutex_lock(&tm.mutex);
	debut = tm.nb_samples;
	list_for_each_entry_reverse(s, &tm.samples, list) {
		int l = snprintf(NULL, 0, "pid %d usr %llu sys %llu\n", nr,
				 s->utime, s->stime);
		if (taille + l >= PAGE_SIZE)
			break;
		taille += l;
		debut--;
	}
	list_for_each_entry(s, &tm.samples, list) {
		if (i++ < debut)
			continue;
		len += sysfs_emit_at(buf, len, "pid %d usr %llu sys %llu\n", nr,
				     s->utime, s->stime);
	}
	mutex_unlock(&tm.mutex);
	return len;
}

static struct kobj_attribute tm_attr = __ATTR_RO(taskmonitor);

static unsigned long tm_count(struct shrinker *s, struct shrink_control *sc)
{
	return tm.nb_samples;
}

static unsigned long tm_scan(struct shrinker *sh, struct shrink_control *sc)
{
	struct task_sample *s, *n;
	unsigned long nb = 0;

	if (!mutex_trylock(&tm.mutex))
		return SHRINK_STOP;
	list_for_each_entry_safe(s, n, &tm.samples, list) {
		if (nb >= sc->nr_to_scan)
			break;
		list_del(&s->list);
		mempool_free(s, tm_pool);
		tm.nb_samples--;
		nb++;
	}
	mutex_unlock(&tm.mutex);
	return nb;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count,
	.scan_objects = tm_scan,
	.seeks = DEFAULT_SEEKS,
};

static int __init tm_init(void)
{
	int err = -ENOMEM;

	tm.pid = find_get_pid(target);
	if (!tm.pid)
		return -ESRCH;
	INIT_LIST_HEAD(&tm.samples);
	mutex_init(&tm.mutex);

	tm_cache = KMEM_CACHE(task_sample, 0);
	if (!tm_cache)
		goto err_pid;
	tm_pool = mempool_create_slab_pool(NB_RESERVE, tm_cache);
	if (!tm_pool)
		goto err_cache;
	err = register_shrinker(&tm_shrinker, "taskmonitor");
	if (err)
		goto err_pool;
	err = sysfs_create_file(kernel_kobj, &tm_attr.attr);
	if (err)
		goto err_shrinker;
	tm_thread = kthread_run(tm_thread_fn, NULL, "taskmonitor");
	if (IS_ERR(tm_thread)) {
		err = PTR_ERR(tm_thread);
		goto err_sysfs;
	}
	return 0;

err_sysfs:
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
err_shrinker:
	unregister_shrinker(&tm_shrinker);
err_pool:
	mempool_destroy(tm_pool);
err_cache:
	kmem_cache_destroy(tm_cache);
err_pid:
	put_pid(tm.pid);
	return err;
}

static void __exit tm_exit(void)
{
	kthread_stop(tm_thread);
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
	unregister_shrinker(&tm_shrinker);
	mempool_destroy(tm_pool);
	kmem_cache_destroy(tm_cache);
	put_pid(tm.pid);
}

module_init(tm_init);
module_exit(tm_exit);
