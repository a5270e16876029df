// SPDX-License-Identifier: GPL-2.0
/*
 * taskmonitor.c - PNL TP 07
 * Baptiste Renaud - all exercises
 *
 * insmod taskmonitor.ko target=PID [period_ms=N]
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/wait.h>
#include <linux/jiffies.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/pid.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/kref.h>
#include <linux/mm.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>

static int target;
module_param(target, int, 0444);
MODULE_PARM_DESC(target, "pid to monitor");

static unsigned int period_ms = 1000;
module_param(period_ms, uint, 0644);
MODULE_PARM_DESC(period_ms, "sampling period (ms)");

struct task_sample {
	struct list_head list;
	struct kref kref;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct list_head list;
	struct pid *pid;
	struct list_head samples;
	unsigned long nsamples;
};

static LIST_HEAD(monitors);
static DEFINE_MUTEX(lock);	/* monitors and every samples list */
static atomic_long_t nsamples_total;
static DECLARE_WAIT_QUEUE_HEAD(wq);
static struct kmem_cache *cache;
static mempool_t *pool;
static struct task_struct *thread;
static struct dentry *dentry;

static void sample_release(struct kref *kref)
{
	mempool_free(container_of(kref, struct task_sample, kref), pool);
}

static void sample_del(struct task_monitor *m, struct task_sample *s)
{
	list_del(&s->list);
	m->nsamples--;
	atomic_long_dec(&nsamples_total);
	kref_put(&s->kref, sample_release);
}

static struct task_sample *save_sample(struct task_monitor *m)
{
	struct task_struct *task;
	struct task_sample *s;
	u64 ut, st;

	rcu_read_lock();
	task = pid_task(m->pid, PIDTYPE_PID);
	task_cputime_adjusted(task, &ut, &st);
	rcu_read_unlock();

	s = mempool_alloc(pool, GFP_NOWAIT);	/* we hold the mutex */
	if (!s)
		return NULL;
	kref_init(&s->kref);
	s->utime = ut;
	s->stime = st;
	list_add_tail(&s->list, &m->samples);
	m->nsamples++;
	atomic_long_inc(&nsamples_total);
	kref_get(&s->kref);
	return s;
}

static int monitor_fn(void *unused)
{
	struct task_monitor *m;
	struct task_sample *s;

	while (!kthread_should_stop()) {
		mutex_lock(&lock);
		list_for_each_entry(m, &monitors, list) {
			s = save_sample(m);
			if (s)
				kref_put(&s->kref, sample_release);
		}
		mutex_unlock(&lock);
		wait_event_interruptible_timeout(wq, kthread_should_stop(),
						 msecs_to_jiffies(period_ms));
	}
	return 0;
}

static struct task_monitor *monitor_find(pid_t nr)
{
	struct task_monitor *m;

	list_for_each_entry(m, &monitors, list)
		if (pid_nr(m->pid) == nr)
			return m;
	return NULL;
}

static int monitor_add(pid_t nr)
{
	struct task_monitor *m;
	struct pid *pid;

	if (nr <= 0)
		return -EINVAL;
	pid = find_get_pid(nr);
	if (!pid)
		return -ESRCH;
	m = kzalloc(sizeof(*m), GFP_KERNEL);
	if (!m) {
		put_pid(pid);
		return -ENOMEM;
	}
	m->pid = pid;
	INIT_LIST_HEAD(&m->samples);

	mutex_lock(&lock);
	if (monitor_find(nr)) {
		mutex_unlock(&lock);
		put_pid(pid);
		kfree(m);
		return -EEXIST;
	}
	list_add_tail(&m->list, &monitors);
	mutex_unlock(&lock);
	return 0;
}

/* lock held */
static void monitor_free(struct task_monitor *m)
{
	struct task_sample *s, *tmp;

	list_del(&m->list);
	list_for_each_entry_safe(s, tmp, &m->samples, list)
		sample_del(m, s);
	put_pid(m->pid);
	kfree(m);
}

static int monitor_remove(pid_t nr)
{
	struct task_monitor *m;
	int ret = 0;

	mutex_lock(&lock);
	m = monitor_find(nr);
	if (m)
		monitor_free(m);
	else
		ret = -ENOENT;
	mutex_unlock(&lock);
	return ret;
}

/* sysfs */

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_monitor *m;
	struct task_sample *s;
	size_t len = 0, l;
	char line[64];

	mutex_lock(&lock);
	list_for_each_entry(m, &monitors, list) {
		size_t bytes = 0;
		struct task_sample *first = NULL;

		list_for_each_entry_reverse(s, &m->samples, list) {
			l = scnprintf(line, sizeof(line), "pid %d usr %llu sys %llu\n",
				      pid_nr(m->pid), s->utime, s->stime);
			if (len + bytes + l > PAGE_SIZE - 1)
				break;
			bytes += l;
			first = s;
		}
		if (!first)
			break;
		s = first;
		list_for_each_entry_from(s, &m->samples, list)
			len += sysfs_emit_at(buf, len, "pid %d usr %llu sys %llu\n",
					     pid_nr(m->pid), s->utime, s->stime);
	}
	mutex_unlock(&lock);
	return len;
}

static struct kobj_attribute tm_attr = __ATTR_RO(taskmonitor);

/* shrinker */

static unsigned long tm_count(struct shrinker *sh, struct shrink_control *sc)
{
	return atomic_long_read(&nsamples_total);
}

static unsigned long tm_scan(struct shrinker *sh, struct shrink_control *sc)
{
	struct task_monitor *m;
	unsigned long freed = 0;

	if (!mutex_trylock(&lock))
		return SHRINK_STOP;
	list_for_each_entry(m, &monitors, list)
		while (freed < sc->nr_to_scan && !list_empty(&m->samples)) {
			sample_del(m, list_first_entry(&m->samples,
						       struct task_sample, list));
			freed++;
		}
	mutex_unlock(&lock);
	return freed;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count,
	.scan_objects = tm_scan,
	.seeks = DEFAULT_SEEKS,
};

/* debugfs */

static int history_show(struct seq_file *sf, void *v)
{
	struct task_monitor *m;
	struct task_sample *s;

	mutex_lock(&lock);
	list_for_each_entry(m, &monitors, list)
		list_for_each_entry(s, &m->samples, list)
			seq_printf(sf, "pid %d usr %llu sys %llu\n",
				   pid_nr(m->pid), s->utime, s->stime);
	mutex_unlock(&lock);
	return 0;
}

static int history_open(struct inode *inode, struct file *file)
{
	return single_open(file, history_show, NULL);
}

static ssize_t history_write(struct file *file, const char __user *ubuf,
			     size_t count, loff_t *ppos)
{
	int nr, ret;

	ret = kstrtoint_from_user(ubuf, count, 10, &nr);
	if (ret)
		return ret;
	if (nr > 0)
		ret = monitor_add(nr);
	else if (nr < 0 && nr != INT_MIN)
		ret = monitor_remove(-nr);
	else
		ret = -EINVAL;
	return ret ? ret : count;
}

static const struct file_operations history_fops = {
	.owner = THIS_MODULE,
	.open = history_open,
	.read = seq_read,
	.write = history_write,
	.llseek = seq_lseek,
	.release = single_release,
};

static void monitors_free(void)
{
	struct task_monitor *m, *tmp;

	mutex_lock(&lock);
	list_for_each_entry_safe(m, tmp, &monitors, list)
		monitor_free(m);
	mutex_unlock(&lock);
}

static int __init taskmonitor_init(void)
{
	int err;

	if (!period_ms)
		return -EINVAL;
	cache = KMEM_CACHE(task_sample, 0);
	if (!cache)
		return -ENOMEM;
	pool = mempool_create_slab_pool(32, cache);
	if (!pool) {
		err = -ENOMEM;
		goto err_cache;
	}
	err = monitor_add(target);
	if (err)
		goto err_pool;
	err = register_shrinker(&tm_shrinker, "taskmonitor");
	if (err)
		goto err_monitors;
	err = sysfs_create_file(kernel_kobj, &tm_attr.attr);
	if (err)
		goto err_shrinker;
	dentry = debugfs_create_file("taskmonitor", 0600, NULL, NULL, &history_fops);
	thread = kthread_run(monitor_fn, NULL, "taskmonitor");
	if (IS_ERR(thread)) {
		err = PTR_ERR(thread);
		goto err_files;
	}
	return 0;

err_files:
	debugfs_remove(dentry);
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
err_shrinker:
	unregister_shrinker(&tm_shrinker);
err_monitors:
	monitors_free();
err_pool:
	mempool_destroy(pool);
err_cache:
	kmem_cache_destroy(cache);
	return err;
}

static void __exit taskmonitor_exit(void)
{
	kthread_stop(thread);
	debugfs_remove(dentry);
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
	unregister_shrinker(&tm_shrinker);
	monitors_free();
	mempool_destroy(pool);
	kmem_cache_destroy(cache);
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Baptiste Renaud");
MODULE_DESCRIPTION("PNL TP7 taskmonitor");
