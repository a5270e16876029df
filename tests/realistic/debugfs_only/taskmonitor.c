// SPDX-License-Identifier: GPL-2.0
/*
 * taskmonitor.c -- Antoine Roussel, PNL 2023
 *
 * We do not use sysfs at all: exercise 6 says sysfs is limited to a page,
 * so everything goes through /sys/kernel/debug/taskmonitor:
 *    cat  /sys/kernel/debug/taskmonitor          -> history
 *    echo 42  > /sys/kernel/debug/taskmonitor    -> monitor pid 42
 *    echo -42 > /sys/kernel/debug/taskmonitor    -> forget pid 42
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/kref.h>
#include <linux/mm.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>

static int target;
module_param(target, int, 0444);

struct task_sample {
	struct list_head list;
	struct kref ref;
	pid_t pid;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct list_head node;
	struct pid *pid;
	pid_t nr;
};

static struct {
	struct mutex lock;
	struct list_head monitors;
	struct list_head samples;
	unsigned long count;
	struct kmem_cache *cache;
	mempool_t pool;
} tmon;

static struct task_struct *worker;
static struct dentry *dent;

static void tmon_release(struct kref *ref)
{
	mempool_free(container_of(ref, struct task_sample, ref), &tmon.pool);
}

static void tmon_unlink(struct task_sample *s)
{
	list_del(&s->list);
	tmon.count--;
	kref_put(&s->ref, tmon_release);
}

static struct task_monitor *tmon_find(pid_t nr);

/* the sample is only kept if the pid is still monitored once we have it */
static struct task_sample *save_sample(struct pid *pid, pid_t nr)
{
	struct task_struct *task;
	struct task_sample *s;

	s = mempool_alloc(&tmon.pool, GFP_KERNEL);
	if (!s)
		return NULL;
	task = get_pid_task(pid, PIDTYPE_PID);
	if (!task) {
		mempool_free(s, &tmon.pool);
		return NULL;
	}
	task_cputime_adjusted(task, &s->utime, &s->stime);
	put_task_struct(task);
	s->pid = nr;
	kref_init(&s->ref);

	mutex_lock(&tmon.lock);
	if (!tmon_find(nr)) {
		mutex_unlock(&tmon.lock);
		kref_put(&s->ref, tmon_release);
		return NULL;
	}
	kref_get(&s->ref);
	list_add_tail(&s->list, &tmon.samples);
	tmon.count++;
	mutex_unlock(&tmon.lock);
	return s;
}

static int worker_fn(void *unused)
{
	struct { struct pid *pid; pid_t nr; } snap[16];
	struct task_monitor *m;
	struct task_sample *s;
	int i, n;

	while (!kthread_should_stop()) {
		/* copy the pids first: save_sample allocates, not under the lock */
		n = 0;
		mutex_lock(&tmon.lock);
		list_for_each_entry(m, &tmon.monitors, node) {
			if (n == ARRAY_SIZE(snap))
				break;
			snap[n].pid = get_pid(m->pid);
			snap[n].nr = m->nr;
			n++;
		}
		mutex_unlock(&tmon.lock);

		for (i = 0; i < n; i++) {
			s = save_sample(snap[i].pid, snap[i].nr);
			if (s)
				kref_put(&s->ref, tmon_release);
			put_pid(snap[i].pid);
		}
		msleep_interruptible(1000);
	}
	return 0;
}

/* -- shrinker -- */

static unsigned long tmon_count(struct shrinker *sh, struct shrink_control *sc)
{
	return tmon.count;
}

static unsigned long tmon_scan(struct shrinker *sh, struct shrink_control *sc)
{
	unsigned long nr = 0;

	mutex_lock(&tmon.lock);
	while (nr < sc->nr_to_scan && !list_empty(&tmon.samples)) {
		tmon_unlink(list_first_entry(&tmon.samples, struct task_sample, list));
		nr++;
	}
	mutex_unlock(&tmon.lock);
	return nr;
}

static struct shrinker tmon_shrinker = {
	.count_objects = tmon_count,
	.scan_objects = tmon_scan,
	.seeks = DEFAULT_SEEKS,
	.batch = 0,
};

/* -- monitors -- */

static struct task_monitor *tmon_find(pid_t nr)
{
	struct task_monitor *m;

	list_for_each_entry(m, &tmon.monitors, node)
		if (m->nr == nr)
			return m;
	return NULL;
}

static int tmon_add(pid_t nr)
{
	struct task_monitor *m;

	m = kmalloc(sizeof(*m), GFP_KERNEL);
	if (!m)
		return -ENOMEM;
	m->pid = find_get_pid(nr);
	if (!m->pid) {
		kfree(m);
		return -ESRCH;
	}
	m->nr = nr;

	mutex_lock(&tmon.lock);
	if (tmon_find(nr)) {
		mutex_unlock(&tmon.lock);
		put_pid(m->pid);
		kfree(m);
		return -EEXIST;
	}
	list_add_tail(&m->node, &tmon.monitors);
	mutex_unlock(&tmon.lock);
	return 0;
}

static int tmon_del(pid_t nr)
{
	struct task_sample *s, *tmp;
	struct task_monitor *m;

	mutex_lock(&tmon.lock);
	m = tmon_find(nr);
	if (!m) {
		mutex_unlock(&tmon.lock);
		return -ENOENT;
	}
	list_del(&m->node);
	list_for_each_entry_safe(s, tmp, &tmon.samples, list)
		if (s->pid == nr)
			tmon_unlink(s);
	mutex_unlock(&tmon.lock);
	put_pid(m->pid);
	kfree(m);
	return 0;
}

static void tmon_del_all(void)
{
	struct task_monitor *m, *mt;
	struct task_sample *s, *st;

	mutex_lock(&tmon.lock);
	list_for_each_entry_safe(s, st, &tmon.samples, list)
		tmon_unlink(s);
	list_for_each_entry_safe(m, mt, &tmon.monitors, node) {
		list_del(&m->node);
		put_pid(m->pid);
		kfree(m);
	}
	mutex_unlock(&tmon.lock);
}

/* -- debugfs -- */

static void *tmon_seq_start(struct seq_file *f, loff_t *pos)
{
	mutex_lock(&tmon.lock);
	return seq_list_start(&tmon.samples, *pos);
}

static void *tmon_seq_next(struct seq_file *f, void *v, loff_t *pos)
{
	return seq_list_next(v, &tmon.samples, pos);
}

static void tmon_seq_stop(struct seq_file *f, void *v)
{
	mutex_unlock(&tmon.lock);
}

static int tmon_seq_show(struct seq_file *f, void *v)
{
	struct task_sample *s = list_entry(v, struct task_sample, list);

	seq_printf(f, "pid %d usr %llu sys %llu\n", s->pid, s->utime, s->stime);
	return 0;
}

static const struct seq_operations tmon_seq_ops = {
	.start = tmon_seq_start,
	.next = tmon_seq_next,
	.stop = tmon_seq_stop,
	.show = tmon_seq_show,
};

static int tmon_open(struct inode *i, struct file *f)
{
	return seq_open(f, &tmon_seq_ops);
}

static ssize_t tmon_write(struct file *f, const char __user *buf, size_t len,
			  loff_t *off)
{
	int pid, ret;

	ret = kstrtoint_from_user(buf, len, 0, &pid);
	if (ret)
		return ret;
	if (pid > 0)
		ret = tmon_add(pid);
	else if (pid < 0 && pid > -PID_MAX_LIMIT)
		ret = tmon_del(-pid);
	else
		ret = -EINVAL;
	return ret ? ret : len;
}

static const struct file_operations tmon_fops = {
	.owner = THIS_MODULE,
	.open = tmon_open,
	.read = seq_read,
	.write = tmon_write,
	.llseek = seq_lseek,
	.release = seq_release,
};

static int __init tmon_init(void)
{
	int err;

	mutex_init(&tmon.lock);
	INIT_LIST_HEAD(&tmon.monitors);
	INIT_LIST_HEAD(&tmon.samples);

	tmon.cache = KMEM_CACHE(task_sample, SLAB_RECLAIM_ACCOUNT);
	if (!tmon.cache)
		return -ENOMEM;
	err = mempool_init(&tmon.pool, 16, mempool_alloc_slab, mempool_free_slab,
			   tmon.cache);
	if (err)
		goto out_cache;

	err = tmon_add(target);
	if (err)
		goto out_pool;

	err = register_shrinker(&tmon_shrinker, "taskmonitor");
	if (err)
		goto out_monitors;

	dent = debugfs_create_file("taskmonitor", 0644, NULL, NULL, &tmon_fops);
	if (IS_ERR(dent)) {
		err = PTR_ERR(dent);
		goto out_shrinker;
	}

	worker = kthread_run(worker_fn, NULL, "taskmonitor");
	if (IS_ERR(worker)) {
		err = PTR_ERR(worker);
		goto out_debugfs;
	}
	return 0;

out_debugfs:
	debugfs_remove(dent);
out_shrinker:
	unregister_shrinker(&tmon_shrinker);
out_monitors:
	tmon_del_all();
out_pool:
	mempool_exit(&tmon.pool);
out_cache:
	kmem_cache_destroy(tmon.cache);
	return err;
}

static void __exit tmon_exit(void)
{
	kthread_stop(worker);
	debugfs_remove(dent);
	unregister_shrinker(&tmon_shrinker);
	tmon_del_all();
	mempool_exit(&tmon.pool);
	kmem_cache_destroy(tmon.cache);
}

module_init(tmon_init);
module_exit(tmon_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("Antoine Roussel");
