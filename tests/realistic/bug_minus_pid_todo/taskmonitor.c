// SPDX-License-Identifier: GPL-2.0
/*
 * taskmonitor - PNL TP07 - 2023/2024
 * Author: Maxime Rey
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
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
#include <linux/uaccess.h>

#define TM_RESERVE 8

static pid_t target;
module_param(target, int, 0444);
MODULE_PARM_DESC(target, "PID of the first process to monitor");

struct task_sample {
	struct list_head list;
	struct kref kref;
	u64 utime, stime;
};

struct task_monitor {
	struct list_head tasks;
	struct pid *pid;
	struct list_head samples;
	size_t nr;
	struct mutex lock;
};

static LIST_HEAD(tasks);
static DEFINE_MUTEX(tasks_lock);
static struct kmem_cache *tm_cache;
static mempool_t *tm_pool;
static struct task_struct *tm_thread;
static struct dentry *tm_dentry;

static void tm_sample_release(struct kref *kref)
{
	mempool_free(container_of(kref, struct task_sample, kref), tm_pool);
}

static struct task_sample *save_sample(struct task_monitor *tm)
{
	struct task_struct *task = get_pid_task(tm->pid, PIDTYPE_PID);
	struct task_sample *ts;

	if (!task)
		return NULL;
	ts = mempool_alloc(tm_pool, GFP_KERNEL);
	if (ts) {
		kref_init(&ts->kref);
		task_cputime_adjusted(task, &ts->utime, &ts->stime);
		kref_get(&ts->kref);
		mutex_lock(&tm->lock);
		list_add_tail(&ts->list, &tm->samples);
		tm->nr++;
		mutex_unlock(&tm->lock);
	}
	put_task_struct(task);
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
				kref_put(&ts->kref, tm_sample_release);
		}
		mutex_unlock(&tasks_lock);
		msleep(1000);
	}
	return 0;
}

static int tm_add(pid_t nr)
{
	struct task_monitor *tm, *it;
	struct pid *pid;

	pid = find_get_pid(nr);
	if (!pid)
		return -ESRCH;
	tm = kzalloc(sizeof(*tm), GFP_KERNEL);
	if (!tm) {
		put_pid(pid);
		return -ENOMEM;
	}
	tm->pid = pid;
	INIT_LIST_HEAD(&tm->samples);
	mutex_init(&tm->lock);

	mutex_lock(&tasks_lock);
	list_for_each_entry(it, &tasks, tasks) {
		if (it->pid == pid) {
			mutex_unlock(&tasks_lock);
			put_pid(pid);
			kfree(tm);
			return -EEXIST;
		}
	}
	list_add_tail(&tm->tasks, &tasks);
	mutex_unlock(&tasks_lock);
	return 0;
}

static void tm_free(struct task_monitor *tm)
{
	struct task_sample *ts, *tmp;

	list_for_each_entry_safe(ts, tmp, &tm->samples, list) {
		list_del(&ts->list);
		kref_put(&ts->kref, tm_sample_release);
	}
	put_pid(tm->pid);
	kfree(tm);
}

/* sysfs */

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_monitor *tm;
	struct task_sample *ts, *from;
	size_t len = 0, need;

	mutex_lock(&tasks_lock);
	list_for_each_entry(tm, &tasks, tasks) {
		mutex_lock(&tm->lock);
		need = 0;
		from = NULL;
		list_for_each_entry_reverse(ts, &tm->samples, list) {
			need += snprintf(NULL, 0, "pid %d usr %llu sys %llu\n",
					 pid_nr(tm->pid), ts->utime, ts->stime);
			if (len + need >= PAGE_SIZE)
				break;
			from = ts;
		}
		if (from) {
			ts = from;
			list_for_each_entry_from(ts, &tm->samples, list)
				len += sysfs_emit_at(buf, len, "pid %d usr %llu sys %llu\n",
						     pid_nr(tm->pid), ts->utime, ts->stime);
		}
		mutex_unlock(&tm->lock);
	}
	mutex_unlock(&tasks_lock);
	return len;
}

static struct kobj_attribute tm_kattr = __ATTR_RO(taskmonitor);

/* shrinker */

static unsigned long tm_count(struct shrinker *s, struct shrink_control *sc)
{
	struct task_monitor *tm;
	unsigned long n = 0;

	if (!mutex_trylock(&tasks_lock))
		return 0;
	list_for_each_entry(tm, &tasks, tasks)
		n += tm->nr;
	mutex_unlock(&tasks_lock);
	return n;
}

static unsigned long tm_scan(struct shrinker *s, struct shrink_control *sc)
{
	struct task_monitor *tm;
	struct task_sample *ts;
	unsigned long freed = 0;

	if (!mutex_trylock(&tasks_lock))
		return SHRINK_STOP;
	list_for_each_entry(tm, &tasks, tasks) {
		mutex_lock(&tm->lock);
		while (freed < sc->nr_to_scan && !list_empty(&tm->samples)) {
			ts = list_first_entry(&tm->samples, struct task_sample, list);
			list_del(&ts->list);
			tm->nr--;
			kref_put(&ts->kref, tm_sample_release);
			freed++;
		}
		mutex_unlock(&tm->lock);
	}
	mutex_unlock(&tasks_lock);
	return freed;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count,
	.scan_objects = tm_scan,
	.seeks = DEFAULT_SEEKS,
};

/* debugfs: one record per monitored task */

static void *tasks_seq_start(struct seq_file *seq, loff_t *pos)
{
	mutex_lock(&tasks_lock);
	return seq_list_start(&tasks, *pos);
}

static void *tasks_seq_next(struct seq_file *seq, void *v, loff_t *pos)
{
	return seq_list_next(v, &tasks, pos);
}

static void tasks_seq_stop(struct seq_file *seq, void *v)
{
	mutex_unlock(&tasks_lock);
}

static int tasks_seq_show(struct seq_file *seq, void *v)
{
	struct task_monitor *tm = list_entry(v, struct task_monitor, tasks);
	struct task_sample *ts;

	mutex_lock(&tm->lock);
	list_for_each_entry(ts, &tm->samples, list)
		seq_printf(seq, "pid %d usr %llu sys %llu\n", pid_nr(tm->pid),
			   ts->utime, ts->stime);
	mutex_unlock(&tm->lock);
	return 0;
}

static const struct seq_operations tasks_seq_ops = {
	.start = tasks_seq_start,
	.next = tasks_seq_next,
	.stop = tasks_seq_stop,
	.show = tasks_seq_show,
};

static int tm_open(struct inode *inode, struct file *file)
{
	return seq_open(file, &tasks_seq_ops);
}

static ssize_t tm_write(struct file *file, const char __user *ubuf,
			size_t count, loff_t *ppos)
{
	char kbuf[16];
	int pid, err;

	if (count >= sizeof(kbuf))
		return -EINVAL;
	if (copy_from_user(kbuf, ubuf, count))
		return -EFAULT;
	kbuf[count] = '\0';
	err = kstrtoint(strim(kbuf), 10, &pid);
	if (err)
		return err;
	if (pid < 0) {
		/* TODO: stop monitoring -pid */
		pr_info("taskmonitor: remove %d not implemented\n", -pid);
		return count;
	}
	if (pid == 0)
		return -EINVAL;
	err = tm_add(pid);
	return err ? err : count;
}

static const struct file_operations tm_fops = {
	.owner = THIS_MODULE,
	.open = tm_open,
	.read = seq_read,
	.write = tm_write,
	.llseek = seq_lseek,
	.release = seq_release,
};

static void tm_free_all(void)
{
	struct task_monitor *tm, *tmp;

	mutex_lock(&tasks_lock);
	list_for_each_entry_safe(tm, tmp, &tasks, tasks) {
		list_del(&tm->tasks);
		tm_free(tm);
	}
	mutex_unlock(&tasks_lock);
}

static int __init taskmonitor_init(void)
{
	int err;

	tm_cache = kmem_cache_create("task_sample", sizeof(struct task_sample), 0,
				     SLAB_RECLAIM_ACCOUNT, NULL);
	if (!tm_cache)
		return -ENOMEM;
	tm_pool = mempool_create(TM_RESERVE, mempool_alloc_slab, mempool_free_slab,
				 tm_cache);
	if (!tm_pool) {
		err = -ENOMEM;
		goto free_cache;
	}
	err = tm_add(target);
	if (err)
		goto free_pool;
	err = register_shrinker(&tm_shrinker, "taskmonitor");
	if (err)
		goto free_tasks;
	err = sysfs_create_file(kernel_kobj, &tm_kattr.attr);
	if (err)
		goto free_shrinker;
	tm_dentry = debugfs_create_file("taskmonitor", 0644, NULL, NULL, &tm_fops);
	tm_thread = kthread_run(monitor_fn, NULL, "taskmonitor_%d", target);
	if (IS_ERR(tm_thread)) {
		err = PTR_ERR(tm_thread);
		goto free_files;
	}
	return 0;

free_files:
	debugfs_remove(tm_dentry);
	sysfs_remove_file(kernel_kobj, &tm_kattr.attr);
free_shrinker:
	unregister_shrinker(&tm_shrinker);
free_tasks:
	tm_free_all();
free_pool:
	mempool_destroy(tm_pool);
free_cache:
	kmem_cache_destroy(tm_cache);
	return err;
}

static void __exit taskmonitor_exit(void)
{
	kthread_stop(tm_thread);
	debugfs_remove(tm_dentry);
	sysfs_remove_file(kernel_kobj, &tm_kattr.attr);
	unregister_shrinker(&tm_shrinker);
	tm_free_all();
	mempool_destroy(tm_pool);
	kmem_cache_destroy(tm_cache);
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Maxime Rey");
MODULE_DESCRIPTION("Monitors the CPU time of processes");
