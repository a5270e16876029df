/*
 * TP7 PNL - taskmonitor
 * Annee 2017-2018, binome Martin / Nguyen
 *
 * Exercices faits : 1 a 6 (pas eu le temps pour le 7)
 * Teste sur la VM du TP (noyau 4.9.x).
 */

#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/init.h>
#include <linux/sched.h>
#include <linux/pid.h>
#include <linux/kthread.h>
#include <linux/slab.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>
#include <linux/shrinker.h>
#include <linux/mempool.h>
#include <linux/kref.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Martin, Nguyen");
MODULE_DESCRIPTION("Module de monitoring d'un processus");

static int target = 1;
module_param(target, int, 0444);
MODULE_PARM_DESC(target, "pid du processus a monitorer");

#define POOL_MIN 10

/* un echantillon */
struct task_sample {
	struct list_head list;
	struct kref refcount;
	cputime_t utime;
	cputime_t stime;
};

/* le moniteur */
struct task_monitor {
	struct pid *pid;
	struct list_head samples;
	int nb_samples;
	struct mutex mutex;
};

static struct task_monitor *tm;
static struct task_struct *monitor_thread;
static struct kmem_cache *sample_cache;
static mempool_t *sample_pool;
static struct dentry *debug_file;

/* ---------------------------------------------------------------- */

static int get_sample(struct task_monitor *mon, struct task_sample *sample)
{
	struct task_struct *task;

	rcu_read_lock();
	task = pid_task(mon->pid, PIDTYPE_PID);
	if (task)
		get_task_struct(task);
	rcu_read_unlock();

	if (!task)
		return -1; /* le processus est mort */

	task_cputime_adjusted(task, &sample->utime, &sample->stime);
	put_task_struct(task);
	return 0;
}

static void release_sample(struct kref *kref)
{
	struct task_sample *sample;

	sample = container_of(kref, struct task_sample, refcount);
	mempool_free(sample, sample_pool);
}

/*
 * Renvoie l'echantillon ajoute a la liste avec une reference en plus,
 * l'appelant doit faire kref_put quand il a fini.
 */
static struct task_sample *save_sample(void)
{
	struct task_sample *sample;

	sample = mempool_alloc(sample_pool, GFP_KERNEL);
	if (!sample)
		return NULL;

	if (get_sample(tm, sample)) {
		mempool_free(sample, sample_pool);
		return NULL;
	}
	kref_init(&sample->refcount);
	kref_get(&sample->refcount);

	mutex_lock(&tm->mutex);
	list_add_tail(&sample->list, &tm->samples);
	tm->nb_samples++;
	mutex_unlock(&tm->mutex);

	return sample;
}

static int monitor_fn(void *data)
{
	struct task_sample *sample;

	while (!kthread_should_stop()) {
		sample = save_sample();
		if (sample) {
			pr_debug("taskmonitor: usr %llu sys %llu\n",
				 (unsigned long long)sample->utime,
				 (unsigned long long)sample->stime);
			kref_put(&sample->refcount, release_sample);
		}
		set_current_state(TASK_INTERRUPTIBLE);
		schedule_timeout(HZ);
	}
	return 0;
}

/* ------------------------------------------------------- sysfs -- */

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_sample *s, *first = NULL;
	int total = 0, n;
	ssize_t len = 0;
	pid_t nr = pid_nr(tm->pid);

	mutex_lock(&tm->mutex);

	/* 1) on remonte depuis la fin pour trouver le plus vieux
	 *    echantillon qui tient encore dans la page */
	list_for_each_entry_reverse(s, &tm->samples, list) {
		n = snprintf(NULL, 0, "pid %d usr %llu sys %llu\n", nr,
			     (unsigned long long)s->utime,
			     (unsigned long long)s->stime);
		if (total + n >= PAGE_SIZE)
			break;
		total += n;
		first = s;
	}

	/* 2) on affiche dans l'ordre a partir de celui-la */
	if (first) {
		s = first;
		list_for_each_entry_from(s, &tm->samples, list) {
			len += scnprintf(buf + len, PAGE_SIZE - len,
					 "pid %d usr %llu sys %llu\n", nr,
					 (unsigned long long)s->utime,
					 (unsigned long long)s->stime);
		}
	}

	mutex_unlock(&tm->mutex);
	return len;
}

static struct kobj_attribute taskmonitor_attr =
	__ATTR(taskmonitor, 0444, taskmonitor_show, NULL);

/* ---------------------------------------------------- shrinker -- */

static unsigned long tm_count_objects(struct shrinker *sh,
				      struct shrink_control *sc)
{
	return tm->nb_samples;
}

static unsigned long tm_scan_objects(struct shrinker *sh,
				     struct shrink_control *sc)
{
	struct task_sample *s, *tmp;
	unsigned long freed = 0;

	if (!mutex_trylock(&tm->mutex))
		return SHRINK_STOP;

	/* les plus vieux sont au debut de la liste */
	list_for_each_entry_safe(s, tmp, &tm->samples, list) {
		if (freed >= sc->nr_to_scan)
			break;
		list_del(&s->list);
		tm->nb_samples--;
		kref_put(&s->refcount, release_sample);
		freed++;
	}

	mutex_unlock(&tm->mutex);
	return freed;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count_objects,
	.scan_objects = tm_scan_objects,
	.seeks = DEFAULT_SEEKS,
};

/* ----------------------------------------------------- debugfs -- */

static void *tm_debut(struct seq_file *m, loff_t *pos)
{
	mutex_lock(&tm->mutex);
	return seq_list_start(&tm->samples, *pos);
}

static void *tm_suivant(struct seq_file *m, void *v, loff_t *pos)
{
	return seq_list_next(v, &tm->samples, pos);
}

static void tm_fin(struct seq_file *m, void *v)
{
	mutex_unlock(&tm->mutex);
}

static int tm_affiche(struct seq_file *m, void *v)
{
	struct task_sample *s = list_entry(v, struct task_sample, list);

	seq_printf(m, "pid %d usr %llu sys %llu\n", pid_nr(tm->pid),
		   (unsigned long long)s->utime,
		   (unsigned long long)s->stime);
	return 0;
}

static const struct seq_operations tm_ops_seq = {
	.start = tm_debut,
	.next = tm_suivant,
	.stop = tm_fin,
	.show = tm_affiche,
};

static int tm_debug_open(struct inode *inode, struct file *file)
{
	return seq_open(file, &tm_ops_seq);
}

static const struct file_operations tm_debug_fops = {
	.owner = THIS_MODULE,
	.open = tm_debug_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = seq_release,
};

/* ------------------------------------------------------ module -- */

static void free_all_samples(void)
{
	struct task_sample *s, *tmp;

	mutex_lock(&tm->mutex);
	list_for_each_entry_safe(s, tmp, &tm->samples, list) {
		list_del(&s->list);
		kref_put(&s->refcount, release_sample);
	}
	tm->nb_samples = 0;
	mutex_unlock(&tm->mutex);
}

static int __init taskmonitor_init(void)
{
	struct task_sample *tmp;
	int ret;

	tm = kzalloc(sizeof(*tm), GFP_KERNEL);
	if (!tm)
		return -ENOMEM;

	tm->pid = find_get_pid(target);
	if (!tm->pid) {
		pr_err("taskmonitor: pas de processus %d\n", target);
		ret = -ESRCH;
		goto err_tm;
	}
	INIT_LIST_HEAD(&tm->samples);
	mutex_init(&tm->mutex);

	sample_cache = KMEM_CACHE(task_sample, 0);
	if (!sample_cache) {
		ret = -ENOMEM;
		goto err_pid;
	}

	/* exo 3 question 1 */
	tmp = kmem_cache_alloc(sample_cache, GFP_KERNEL);
	if (tmp) {
		pr_info("taskmonitor: sizeof %zu ksize %zu\n",
			sizeof(struct task_sample), ksize(tmp));
		kmem_cache_free(sample_cache, tmp);
	}

	sample_pool = mempool_create_slab_pool(POOL_MIN, sample_cache);
	if (!sample_pool) {
		ret = -ENOMEM;
		goto err_cache;
	}

	ret = register_shrinker(&tm_shrinker);
	if (ret)
		goto err_pool;

	ret = sysfs_create_file(kernel_kobj, &taskmonitor_attr.attr);
	if (ret)
		goto err_shrinker;

	debug_file = debugfs_create_file("taskmonitor", 0444, NULL, NULL,
					 &tm_debug_fops);

	monitor_thread = kthread_run(monitor_fn, NULL, "monitor_fn");
	if (IS_ERR(monitor_thread)) {
		ret = PTR_ERR(monitor_thread);
		goto err_debugfs;
	}

	pr_info("taskmonitor: monitoring %d\n", target);
	return 0;

err_debugfs:
	debugfs_remove(debug_file);
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
err_shrinker:
	unregister_shrinker(&tm_shrinker);
err_pool:
	mempool_destroy(sample_pool);
err_cache:
	kmem_cache_destroy(sample_cache);
err_pid:
	put_pid(tm->pid);
err_tm:
	kfree(tm);
	return ret;
}

static void __exit taskmonitor_exit(void)
{
	kthread_stop(monitor_thread);
	debugfs_remove(debug_file);
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
	unregister_shrinker(&tm_shrinker);
	free_all_samples();
	mempool_destroy(sample_pool);
	kmem_cache_destroy(sample_cache);
	put_pid(tm->pid);
	kfree(tm);
	pr_info("taskmonitor: bye\n");
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);
