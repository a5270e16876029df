// SPDX-License-Identifier: GPL-2.0
/*
 * taskmonitor -- TP 07 PNL, Sorbonne Universite, 2022
 * Lea Fontaine & Hugo Marchand
 *
 *   /sys/kernel/taskmonitor/samples         newest samples (one page max)
 *   /sys/kernel/taskmonitor/count           number of samples kept
 *   /sys/kernel/debug/taskmonitor/history   every sample; "N" adds PID N,
 *                                           "-N" removes it
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/kref.h>
#include <linux/mutex.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>

#define SAMPLE_RESERVE	20

static int target = -1;
module_param(target, int, 0400);
MODULE_PARM_DESC(target, "PID monitored from the start");

struct task_sample {
	struct list_head list;
	struct kref kref;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct list_head tasks;		/* link in the global list */
	struct task_struct *task;	/* we hold a reference */
	pid_t pid;
	struct mutex lock;
	struct list_head samples;
	int nb_samples;
};

static LIST_HEAD(tasks);
static DEFINE_MUTEX(tasks_lock);

static struct kmem_cache *sample_cache;
static mempool_t *sample_pool;
static struct task_struct *kthread;
static struct kobject *tm_kobj;
static struct dentry *tm_dir;

static void sample_release(struct kref *kref)
{
	mempool_free(container_of(kref, struct task_sample, kref), sample_pool);
}

static struct task_sample *save_sample(struct task_monitor *tm)
{
	struct task_sample *ts;

	if (!pid_alive(tm->task))
		return NULL;	/* the task is dead, keep its history as it is */

	ts = mempool_alloc(sample_pool, GFP_KERNEL);
	if (!ts)
		return NULL;
	kref_init(&ts->kref);
	task_cputime_adjusted(tm->task, &ts->utime, &ts->stime);

	kref_get(&ts->kref);
	mutex_lock(&tm->lock);
	list_add_tail(&ts->list, &tm->samples);
	tm->nb_samples++;
	mutex_unlock(&tm->lock);
	return ts;
}

static int monitor_fn(void *data)
{
	struct task_monitor *tm;
	struct task_sample *ts;

	while (!kthread_should_stop()) {
		mutex_lock(&tasks_lock);
		list_for_each_entry(tm, &tasks, tasks) {
			ts = save_sample(tm);
			if (ts)
				kref_put(&ts->kref, sample_release);
		}
		mutex_unlock(&tasks_lock);
		ssleep(1);
	}
	return 0;
}

static struct task_monitor *lookup(pid_t pid)
{
	struct task_monitor *tm;

	list_for_each_entry(tm, &tasks, tasks)
		if (tm->pid == pid)
			return tm;
	return NULL;
}

static int start_monitor(pid_t pid)
{
	struct task_struct *task;
	struct task_monitor *tm;
	int ret = 0;

	rcu_read_lock();
	task = pid_task(find_vpid(pid), PIDTYPE_PID);
	if (task)
		get_task_struct(task);
	rcu_read_unlock();
	if (!task)
		return -ESRCH;

	mutex_lock(&tasks_lock);
	if (lookup(pid)) {
		ret = -EEXIST;
		goto unlock;
	}
	tm = kzalloc(sizeof(*tm), GFP_KERNEL);
	if (!tm) {
		ret = -ENOMEM;
		goto unlock;
	}
	tm->task = task;
	tm->pid = pid;
	mutex_init(&tm->lock);
	INIT_LIST_HEAD(&tm->samples);
	list_add_tail(&tm->tasks, &tasks);
	task = NULL;
unlock:
	mutex_unlock(&tasks_lock);
	if (task)
		put_task_struct(task);
	return ret;
}

static void destroy_monitor(struct task_monitor *tm)
{
	struct task_sample *ts, *next;

	mutex_lock(&tm->lock);
	list_for_each_entry_safe(ts, next, &tm->samples, list) {
		list_del(&ts->list);
		kref_put(&ts->kref, sample_release);
	}
	mutex_unlock(&tm->lock);
	put_task_struct(tm->task);
	kfree(tm);
}

static int stop_monitor(pid_t pid)
{
	struct task_monitor *tm;

	mutex_lock(&tasks_lock);
	tm = lookup(pid);
	if (tm)
		list_del(&tm->tasks);
	mutex_unlock(&tasks_lock);
	if (!tm)
		return -ENOENT;
	destroy_monitor(tm);
	return 0;
}

/* --- sysfs: /sys/kernel/taskmonitor/{samples,count} --- */

static ssize_t samples_show(struct kobject *kobj, struct kobj_attribute *attr,
			    char *buf)
{
	struct task_monitor *tm;
	struct task_sample *ts;
	int len = 0, skip, fit;

	mutex_lock(&tasks_lock);
	list_for_each_entry(tm, &tasks, tasks) {
		mutex_lock(&tm->lock);
		/* a line is at most 50 bytes: keep the ones that surely fit */
		fit = (PAGE_SIZE - 1 - len) / 50;
		skip = tm->nb_samples > fit ? tm->nb_samples - fit : 0;
		list_for_each_entry(ts, &tm->samples, list) {
			if (skip-- > 0)
				continue;
			len += sysfs_emit_at(buf, len, "pid %d usr %llu sys %llu\n",
					     tm->pid, ts->utime, ts->stime);
		}
		mutex_unlock(&tm->lock);
	}
	mutex_unlock(&tasks_lock);
	return len;
}

static ssize_t count_show(struct kobject *kobj, struct kobj_attribute *attr,
			  char *buf)
{
	struct task_monitor *tm;
	int n = 0;

	mutex_lock(&tasks_lock);
	list_for_each_entry(tm, &tasks, tasks)
		n += tm->nb_samples;
	mutex_unlock(&tasks_lock);
	return sysfs_emit(buf, "%d\n", n);
}

static struct kobj_attribute samples_attr = __ATTR_RO(samples);
static struct kobj_attribute count_attr = __ATTR_RO(count);

static struct attribute *tm_attrs[] = {
	&samples_attr.attr,
	&count_attr.attr,
	NULL,
};

static const struct attribute_group tm_group = {
	.attrs = tm_attrs,
};

/* --- shrinker --- */

static unsigned long tm_count_samples(struct shrinker *s, struct shrink_control *sc)
{
	struct task_monitor *tm;
	unsigned long n = 0;

	if (!mutex_trylock(&tasks_lock))
		return 0;
	list_for_each_entry(tm, &tasks, tasks)
		n += tm->nb_samples;
	mutex_unlock(&tasks_lock);
	return n;
}

static unsigned long tm_free_samples(struct shrinker *s, struct shrink_control *sc)
{
	struct task_monitor *tm;
	struct task_sample *ts, *next;
	unsigned long freed = 0;

	if (!mutex_trylock(&tasks_lock))
		return SHRINK_STOP;
	list_for_each_entry(tm, &tasks, tasks) {
		mutex_lock(&tm->lock);
		list_for_each_entry_safe(ts, next, &tm->samples, list) {
			if (freed >= sc->nr_to_scan)
				break;
			list_del(&ts->list);
			tm->nb_samples--;
			kref_put(&ts->kref, sample_release);
			freed++;
		}
		mutex_unlock(&tm->lock);
	}
	mutex_unlock(&tasks_lock);
	return freed;
}

static struct shrinker tm_shrinker = {
	.count_objects	= tm_count_samples,
	.scan_objects	= tm_free_samples,
	.seeks		= DEFAULT_SEEKS,
};

/* --- debugfs: /sys/kernel/debug/taskmonitor/history --- */

static int history_show(struct seq_file *m, void *v)
{
	struct task_monitor *tm;
	struct task_sample *ts;

	mutex_lock(&tasks_lock);
	list_for_each_entry(tm, &tasks, tasks) {
		mutex_lock(&tm->lock);
		list_for_each_entry(ts, &tm->samples, list)
			seq_printf(m, "pid %d usr %llu sys %llu\n",
				   tm->pid, ts->utime, ts->stime);
		mutex_unlock(&tm->lock);
	}
	mutex_unlock(&tasks_lock);
	return 0;
}

static int history_open(struct inode *inode, struct file *file)
{
	return single_open(file, history_show, inode->i_private);
}

static ssize_t history_write(struct file *file, const char __user *ubuf,
			     size_t len, loff_t *ppos)
{
	char buf[32];
	int pid, ret;

	if (len > sizeof(buf) - 1)
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = '\0';
	if (sscanf(buf, "%d", &pid) != 1 || pid == 0)
		return -EINVAL;

	if (pid > 0)
		ret = start_monitor(pid);
	else
		ret = stop_monitor(-pid);
	return ret < 0 ? ret : len;
}

static const struct file_operations history_fops = {
	.owner		= THIS_MODULE,
	.open		= history_open,
	.read		= seq_read,
	.write		= history_write,
	.llseek		= seq_lseek,
	.release	= single_release,
};

/* --- module --- */

static void stop_all(void)
{
	struct task_monitor *tm, *next;

	mutex_lock(&tasks_lock);
	list_for_each_entry_safe(tm, next, &tasks, tasks) {
		list_del(&tm->tasks);
		destroy_monitor(tm);
	}
	mutex_unlock(&tasks_lock);
}

static int __init taskmonitor_init(void)
{
	struct task_sample *ts;
	int ret;

	sample_cache = KMEM_CACHE(task_sample, 0);
	if (!sample_cache)
		return -ENOMEM;

	ts = kmem_cache_alloc(sample_cache, GFP_KERNEL);
	if (ts) {
		pr_info("taskmonitor: sizeof(task_sample) = %zu, ksize = %zu\n",
			sizeof(*ts), ksize(ts));
		kmem_cache_free(sample_cache, ts);
	}

	sample_pool = mempool_create_slab_pool(SAMPLE_RESERVE, sample_cache);
	if (!sample_pool) {
		ret = -ENOMEM;
		goto err_cache;
	}

	ret = start_monitor(target);
	if (ret)
		goto err_pool;

	tm_kobj = kobject_create_and_add("taskmonitor", kernel_kobj);
	if (!tm_kobj) {
		ret = -ENOMEM;
		goto err_tasks;
	}
	ret = sysfs_create_group(tm_kobj, &tm_group);
	if (ret)
		goto err_kobj;

	tm_dir = debugfs_create_dir("taskmonitor", NULL);
	debugfs_create_file("history", 0644, tm_dir, NULL, &history_fops);

	ret = register_shrinker(&tm_shrinker, "taskmonitor");
	if (ret)
		goto err_debugfs;

	kthread = kthread_run(monitor_fn, NULL, "taskmonitor");
	if (IS_ERR(kthread)) {
		ret = PTR_ERR(kthread);
		goto err_shrinker;
	}
	return 0;

err_shrinker:
	unregister_shrinker(&tm_shrinker);
err_debugfs:
	debugfs_remove_recursive(tm_dir);
	sysfs_remove_group(tm_kobj, &tm_group);
err_kobj:
	kobject_put(tm_kobj);
err_tasks:
	stop_all();
err_pool:
	mempool_destroy(sample_pool);
err_cache:
	kmem_cache_destroy(sample_cache);
	return ret;
}

static void __exit taskmonitor_exit(void)
{
	kthread_stop(kthread);
	unregister_shrinker(&tm_shrinker);
	debugfs_remove_recursive(tm_dir);
	sysfs_remove_group(tm_kobj, &tm_group);
	kobject_put(tm_kobj);
	stop_all();
	mempool_destroy(sample_pool);
	kmem_cache_destroy(sample_cache);
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Lea Fontaine, Hugo Marchand");
MODULE_DESCRIPTION("taskmonitor: CPU time history of processes");
