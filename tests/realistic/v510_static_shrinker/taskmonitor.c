// SPDX-License-Identifier: GPL-2.0
/*
 * taskmonitor - PNL TP 07 (2021)
 *
 * Samples the CPU times of one or more processes once per second and keeps
 * the history in memory.
 *
 *   insmod taskmonitor.ko target=<pid>
 *   cat /sys/kernel/taskmonitor              latest samples (one page max)
 *   cat /sys/kernel/debug/taskmonitor        whole history
 *   echo <pid>  > /sys/kernel/debug/taskmonitor    monitor another process
 *   echo -<pid> > /sys/kernel/debug/taskmonitor    stop monitoring it
 *
 * Times are printed in milliseconds.
 * Tested on the course VM (Linux 5.10).
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/sched/cputime.h>
#include <linux/sched/task.h>
#include <linux/pid.h>
#include <linux/kthread.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/kref.h>
#include <linux/shrinker.h>
#include <linux/sysfs.h>
#include <linux/kobject.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Thomas Leroy");
MODULE_DESCRIPTION("Per-process CPU time history");

static int target;
module_param(target, int, 0400);
MODULE_PARM_DESC(target, "pid to monitor at load time");

#define RESERVE_SAMPLES 32
#define MAX_LINE 64		/* generous upper bound of one output line */

struct task_sample {
	struct list_head list;
	struct kref ref;
	u64 utime;		/* ms */
	u64 stime;		/* ms */
};

struct task_monitor {
	struct list_head node;	/* in the monitors list */
	struct pid *pid;
	struct list_head samples;
	unsigned long nr_samples;
	struct mutex lock;	/* protects samples and nr_samples */
};

static LIST_HEAD(monitors);
static DEFINE_MUTEX(monitors_lock);	/* protects the monitors list */
/* for count_objects: no lock there, it may run from reclaim in our own sampler */
static atomic_long_t total_samples = ATOMIC_LONG_INIT(0);

static struct task_struct *sampler;
static struct kmem_cache *sample_cachep;
static mempool_t *sample_pool;
static struct dentry *dbg_entry;

/* ---- samples ---- */

static void sample_release(struct kref *ref)
{
	mempool_free(container_of(ref, struct task_sample, ref), sample_pool);
}

static inline void sample_put(struct task_sample *s)
{
	kref_put(&s->ref, sample_release);
}

static bool get_sample(struct task_monitor *m, struct task_sample *s)
{
	struct task_struct *task = get_pid_task(m->pid, PIDTYPE_PID);
	u64 ut, st;

	if (!task)
		return false;	/* the process is gone */
	task_cputime_adjusted(task, &ut, &st);
	put_task_struct(task);
	s->utime = div_u64(ut, NSEC_PER_MSEC);
	s->stime = div_u64(st, NSEC_PER_MSEC);
	return true;
}

/* returns the new sample with a reference for the caller */
static struct task_sample *save_sample(struct task_monitor *m)
{
	struct task_sample *s = mempool_alloc(sample_pool, GFP_KERNEL);

	if (!s)
		return NULL;
	if (!get_sample(m, s)) {
		mempool_free(s, sample_pool);
		return NULL;
	}
	kref_init(&s->ref);	/* the list's reference */
	kref_get(&s->ref);	/* the caller's reference */
	mutex_lock(&m->lock);
	list_add_tail(&s->list, &m->samples);
	m->nr_samples++;
	atomic_long_inc(&total_samples);
	mutex_unlock(&m->lock);
	return s;
}

static int sampler_fn(void *unused)
{
	struct task_monitor *m;
	struct task_sample *s;

	while (!kthread_should_stop()) {
		mutex_lock(&monitors_lock);
		list_for_each_entry(m, &monitors, node) {
			s = save_sample(m);
			if (s)
				sample_put(s);
		}
		mutex_unlock(&monitors_lock);
		schedule_timeout_interruptible(HZ);
	}
	return 0;
}

/* ---- monitors ---- */

static struct task_monitor *find_monitor(pid_t nr)
{
	struct task_monitor *m;

	list_for_each_entry(m, &monitors, node)
		if (pid_nr(m->pid) == nr)
			return m;
	return NULL;
}

static void free_monitor(struct task_monitor *m)
{
	struct task_sample *s, *n;

	mutex_lock(&m->lock);
	list_for_each_entry_safe(s, n, &m->samples, list) {
		list_del(&s->list);
		sample_put(s);
	}
	atomic_long_sub(m->nr_samples, &total_samples);
	m->nr_samples = 0;
	mutex_unlock(&m->lock);
	put_pid(m->pid);
	kfree(m);
}

static int add_monitor(pid_t nr)
{
	struct task_monitor *m;
	struct pid *pid;
	int err = 0;

	if (nr <= 0)
		return -EINVAL;
	pid = find_get_pid(nr);
	if (!pid)
		return -ESRCH;

	mutex_lock(&monitors_lock);
	if (find_monitor(nr)) {
		err = -EEXIST;
		goto out;
	}
	m = kzalloc(sizeof(*m), GFP_KERNEL);
	if (!m) {
		err = -ENOMEM;
		goto out;
	}
	m->pid = pid;
	pid = NULL;
	INIT_LIST_HEAD(&m->samples);
	mutex_init(&m->lock);
	list_add_tail(&m->node, &monitors);
out:
	mutex_unlock(&monitors_lock);
	put_pid(pid);
	return err;
}

static int del_monitor(pid_t nr)
{
	struct task_monitor *m;

	mutex_lock(&monitors_lock);
	m = find_monitor(nr);
	if (m)
		list_del(&m->node);
	mutex_unlock(&monitors_lock);
	if (!m)
		return -ENOENT;
	free_monitor(m);
	return 0;
}

/* ---- sysfs: latest samples, at most one page ---- */

static ssize_t show_one(struct task_monitor *m, char *buf, size_t room)
{
	struct task_sample *s;
	unsigned long skip, max = room / MAX_LINE;
	ssize_t len = 0;

	mutex_lock(&m->lock);
	skip = m->nr_samples > max ? m->nr_samples - max : 0;
	list_for_each_entry(s, &m->samples, list) {
		if (skip) {
			skip--;
			continue;
		}
		len += scnprintf(buf + len, room - len, "[%d] utime=%llu stime=%llu\n",
				 pid_nr(m->pid), s->utime, s->stime);
	}
	mutex_unlock(&m->lock);
	return len;
}

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_monitor *m;
	size_t room;
	ssize_t len = 0;
	int n = 0;

	mutex_lock(&monitors_lock);
	list_for_each_entry(m, &monitors, node)
		n++;
	if (n) {
		room = PAGE_SIZE / n;	/* the same share for every process */
		list_for_each_entry(m, &monitors, node)
			len += show_one(m, buf + len, room);
	}
	mutex_unlock(&monitors_lock);
	return len;
}

static struct kobj_attribute taskmonitor_attr = __ATTR_RO(taskmonitor);

/* ---- shrinker ---- */

static unsigned long tm_count(struct shrinker *sh, struct shrink_control *sc)
{
	return atomic_long_read(&total_samples);
}

static unsigned long tm_scan(struct shrinker *sh, struct shrink_control *sc)
{
	struct task_monitor *m;
	struct task_sample *s, *n;
	unsigned long freed = 0;

	if (!mutex_trylock(&monitors_lock))
		return SHRINK_STOP;
	list_for_each_entry(m, &monitors, node) {
		mutex_lock(&m->lock);
		list_for_each_entry_safe(s, n, &m->samples, list) {
			if (freed == sc->nr_to_scan)
				break;
			list_del(&s->list);
			m->nr_samples--;
			atomic_long_dec(&total_samples);
			sample_put(s);
			freed++;
		}
		mutex_unlock(&m->lock);
		if (freed == sc->nr_to_scan)
			break;
	}
	mutex_unlock(&monitors_lock);
	return freed;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count,
	.scan_objects = tm_scan,
	.seeks = DEFAULT_SEEKS,
};

/* ---- debugfs ---- */

static int history_show(struct seq_file *sf, void *unused)
{
	struct task_monitor *m;
	struct task_sample *s;

	mutex_lock(&monitors_lock);
	list_for_each_entry(m, &monitors, node) {
		mutex_lock(&m->lock);
		list_for_each_entry(s, &m->samples, list)
			seq_printf(sf, "[%d] utime=%llu stime=%llu\n",
				   pid_nr(m->pid), s->utime, s->stime);
		mutex_unlock(&m->lock);
	}
	mutex_unlock(&monitors_lock);
	return 0;
}

static int history_open(struct inode *inode, struct file *file)
{
	return single_open(file, history_show, NULL);
}

static ssize_t history_write(struct file *file, const char __user *ubuf,
			     size_t count, loff_t *ppos)
{
	char kbuf[16];
	int nr, err;

	if (count == 0 || count >= sizeof(kbuf))
		return -EINVAL;
	if (copy_from_user(kbuf, ubuf, count))
		return -EFAULT;
	kbuf[count] = 0;

	err = kstrtoint(strim(kbuf), 10, &nr);
	if (err)
		return err;
	if (nr > 0)
		err = add_monitor(nr);
	else if (nr < 0 && nr != INT_MIN)
		err = del_monitor(-nr);
	else
		err = -EINVAL;
	return err ? err : count;
}

static const struct file_operations history_fops = {
	.owner = THIS_MODULE,
	.open = history_open,
	.read = seq_read,
	.write = history_write,
	.llseek = seq_lseek,
	.release = single_release,
};

/* ---- init / exit ---- */

static void free_all_monitors(void)
{
	struct task_monitor *m, *n;

	list_for_each_entry_safe(m, n, &monitors, node) {
		list_del(&m->node);
		free_monitor(m);
	}
}

static int __init taskmonitor_init(void)
{
	int err;

	sample_cachep = KMEM_CACHE(task_sample, 0);
	if (!sample_cachep)
		return -ENOMEM;
	sample_pool = mempool_create_slab_pool(RESERVE_SAMPLES, sample_cachep);
	if (!sample_pool) {
		err = -ENOMEM;
		goto fail_cache;
	}

	err = add_monitor(target);
	if (err) {
		pr_err("taskmonitor: cannot monitor pid %d (%d)\n", target, err);
		goto fail_pool;
	}

	err = register_shrinker(&tm_shrinker);
	if (err)
		goto fail_monitors;

	err = sysfs_create_file(kernel_kobj, &taskmonitor_attr.attr);
	if (err)
		goto fail_shrinker;

	dbg_entry = debugfs_create_file("taskmonitor", 0644, NULL, NULL,
					&history_fops);

	sampler = kthread_run(sampler_fn, NULL, "taskmonitor");
	if (IS_ERR(sampler)) {
		err = PTR_ERR(sampler);
		goto fail_files;
	}
	return 0;

fail_files:
	debugfs_remove(dbg_entry);
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
fail_shrinker:
	unregister_shrinker(&tm_shrinker);
fail_monitors:
	free_all_monitors();
fail_pool:
	mempool_destroy(sample_pool);
fail_cache:
	kmem_cache_destroy(sample_cachep);
	return err;
}

static void __exit taskmonitor_exit(void)
{
	kthread_stop(sampler);
	debugfs_remove(dbg_entry);
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
	unregister_shrinker(&tm_shrinker);
	mutex_lock(&monitors_lock);
	free_all_monitors();
	mutex_unlock(&monitors_lock);
	mempool_destroy(sample_pool);
	kmem_cache_destroy(sample_cachep);
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);
