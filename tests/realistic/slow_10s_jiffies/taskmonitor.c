/*
 * TP 07 - taskmonitor
 * Mehdi Amrani
 *
 * Un echantillon toutes les 10 secondes (sinon la console defile trop
 * vite quand on debug). Les temps sont en jiffies.
 * Format : "pid <pid> : <utime> usr <stime> sys"
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/pid.h>
#include <linux/jiffies.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/mm.h>
#include <linux/sysfs.h>
#include <linux/kobject.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Mehdi Amrani");

#define PERIODE_SEC 10
#define LIGNE_MAX 48		/* taille max d'une ligne affichee */

static int target;
module_param(target, int, 0);

struct task_sample {
	struct list_head list;
	struct kref ref;
	unsigned long utime;	/* jiffies */
	unsigned long stime;
};

struct task_monitor {
	struct pid *pid;
	pid_t nr;
	struct list_head liste;
	int nb;
	struct mutex verrou;
};

static struct task_monitor *moniteur;
static struct task_struct *thread;
static struct kmem_cache *cache_echantillons;
static mempool_t *reserve;
static struct dentry *fichier_debug;

static void liberer(struct kref *ref)
{
	struct task_sample *e = container_of(ref, struct task_sample, ref);

	mempool_free(e, reserve);
}

static struct task_sample *save_sample(void)
{
	struct task_struct *tache;
	struct task_sample *e;

	tache = get_pid_task(moniteur->pid, PIDTYPE_PID);
	if (tache == NULL)
		return NULL;

	e = mempool_alloc(reserve, GFP_KERNEL);
	if (e != NULL) {
		e->utime = nsecs_to_jiffies(tache->utime);
		e->stime = nsecs_to_jiffies(tache->stime);
		kref_init(&e->ref);
		kref_get(&e->ref);	/* pour l'appelant */
		mutex_lock(&moniteur->verrou);
		list_add_tail(&e->list, &moniteur->liste);
		moniteur->nb++;
		mutex_unlock(&moniteur->verrou);
	}
	put_task_struct(tache);
	return e;
}

static int monitor_fn(void *data)
{
	struct task_sample *e;

	while (!kthread_should_stop()) {
		e = save_sample();
		if (e != NULL)
			kref_put(&e->ref, liberer);
		ssleep(PERIODE_SEC);
	}
	return 0;
}

/* ---- sysfs ---- */

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_sample *e;
	int a_sauter, len = 0;

	mutex_lock(&moniteur->verrou);
	/* on n'affiche que les derniers, ceux qui tiennent dans la page */
	a_sauter = moniteur->nb - (PAGE_SIZE - 1) / LIGNE_MAX;
	list_for_each_entry(e, &moniteur->liste, list) {
		if (a_sauter > 0) {
			a_sauter--;
			continue;
		}
		len += sysfs_emit_at(buf, len, "pid %d : %lu usr %lu sys\n",
				     moniteur->nr, e->utime, e->stime);
	}
	mutex_unlock(&moniteur->verrou);
	return len;
}

static struct kobj_attribute attribut = __ATTR_RO(taskmonitor);

/* ---- shrinker ---- */

static unsigned long compter(struct shrinker *s, struct shrink_control *sc)
{
	return moniteur->nb;
}

static unsigned long liberer_vieux(struct shrinker *s,
				   struct shrink_control *sc)
{
	struct task_sample *e, *suiv;
	unsigned long n = 0;

	if (!mutex_trylock(&moniteur->verrou))
		return SHRINK_STOP;
	list_for_each_entry_safe(e, suiv, &moniteur->liste, list) {
		if (n >= sc->nr_to_scan)
			break;
		list_del(&e->list);
		moniteur->nb--;
		kref_put(&e->ref, liberer);
		n++;
	}
	mutex_unlock(&moniteur->verrou);
	return n;
}

static struct shrinker mon_shrinker = {
	.count_objects = compter,
	.scan_objects = liberer_vieux,
	.seeks = DEFAULT_SEEKS,
};

/* ---- debugfs (seq_file) ---- */

static void *debut(struct seq_file *sf, loff_t *pos)
{
	struct task_sample *e;
	loff_t i = 0;

	mutex_lock(&moniteur->verrou);
	list_for_each_entry(e, &moniteur->liste, list) {
		if (i == *pos)
			return e;
		i++;
	}
	return NULL;
}

static void *suivant(struct seq_file *sf, void *v, loff_t *pos)
{
	struct task_sample *e = v;

	(*pos)++;
	if (list_is_last(&e->list, &moniteur->liste))
		return NULL;
	return list_next_entry(e, list);
}

static void fin(struct seq_file *sf, void *v)
{
	mutex_unlock(&moniteur->verrou);
}

static int afficher(struct seq_file *sf, void *v)
{
	struct task_sample *e = v;

	seq_printf(sf, "pid %d : %lu usr %lu sys\n", moniteur->nr, e->utime,
		   e->stime);
	return 0;
}

static const struct seq_operations ops_seq = {
	.start = debut,
	.next = suivant,
	.stop = fin,
	.show = afficher,
};

static int ouvrir(struct inode *inode, struct file *file)
{
	return seq_open(file, &ops_seq);
}

static const struct file_operations ops_debug = {
	.owner = THIS_MODULE,
	.open = ouvrir,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = seq_release,
};

/* ---- module ---- */

static void vider(void)
{
	struct task_sample *e, *suiv;

	mutex_lock(&moniteur->verrou);
	list_for_each_entry_safe(e, suiv, &moniteur->liste, list) {
		list_del(&e->list);
		kref_put(&e->ref, liberer);
	}
	moniteur->nb = 0;
	mutex_unlock(&moniteur->verrou);
}

static int __init taskmonitor_init(void)
{
	int err = -ENOMEM;

	moniteur = kzalloc(sizeof(*moniteur), GFP_KERNEL);
	if (moniteur == NULL)
		return -ENOMEM;
	moniteur->nr = target;
	moniteur->pid = find_get_pid(target);
	if (moniteur->pid == NULL) {
		err = -ESRCH;
		goto erreur_moniteur;
	}
	INIT_LIST_HEAD(&moniteur->liste);
	mutex_init(&moniteur->verrou);

	cache_echantillons = KMEM_CACHE(task_sample, 0);
	if (cache_echantillons == NULL)
		goto erreur_pid;
	reserve = mempool_create_slab_pool(5, cache_echantillons);
	if (reserve == NULL)
		goto erreur_cache;

	err = register_shrinker(&mon_shrinker, "taskmonitor");
	if (err)
		goto erreur_reserve;
	err = sysfs_create_file(kernel_kobj, &attribut.attr);
	if (err)
		goto erreur_shrinker;
	fichier_debug = debugfs_create_file("taskmonitor", 0400, NULL, NULL,
					    &ops_debug);

	thread = kthread_run(monitor_fn, NULL, "taskmonitor");
	if (IS_ERR(thread)) {
		err = PTR_ERR(thread);
		goto erreur_fichiers;
	}
	return 0;

erreur_fichiers:
	debugfs_remove(fichier_debug);
	sysfs_remove_file(kernel_kobj, &attribut.attr);
erreur_shrinker:
	unregister_shrinker(&mon_shrinker);
erreur_reserve:
	mempool_destroy(reserve);
erreur_cache:
	kmem_cache_destroy(cache_echantillons);
erreur_pid:
	put_pid(moniteur->pid);
erreur_moniteur:
	kfree(moniteur);
	return err;
}

static void __exit taskmonitor_exit(void)
{
	kthread_stop(thread);
	debugfs_remove(fichier_debug);
	sysfs_remove_file(kernel_kobj, &attribut.attr);
	unregister_shrinker(&mon_shrinker);
	vider();
	mempool_destroy(reserve);
	kmem_cache_destroy(cache_echantillons);
	put_pid(moniteur->pid);
	kfree(moniteur);
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);
