// SPDX-License-Identifier: GPL-2.0
/*
 * PNL 2020 - TP 07 - taskmonitor
 * Camille Dubois
 *
 * Files:
 *   /sys/kernel/taskmonitor                    last samples (fits in a page)
 *   /sys/kernel/debug/taskmonitor/taskmonitor  all samples, write PID / -PID
 */
#include <linux/module.h>
#include <linux/init.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/pid.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/kref.h>
#include <linux/shrinker.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>

static pid_t target;
module_param(target, int, 0);
MODULE_PARM_DESC(target, "first pid to monitor");

static unsigned int interval_ms = 1000;
module_param(interval_ms, uint, 0644);
MODULE_PARM_DESC(interval_ms, "sampling interval in ms (default 1000)");

/* one sample of one process; every process shares the same list */
struct task_sample {
	struct list_head list;
	struct kref kref;
	pid_t pid;
	u64 utime;
	u64 stime;
};

/* one monitored process */
struct task_monitor {
	struct list_head list;
	struct pid *pid;
};

/* all the state of the module */
static struct {
	struct mutex lock;		/* everything below */
	struct list_head monitors;
	struct list_head samples;	/* oldest first */
	unsigned long nr_samples;
} tm;

static struct kmem_cache *sample_cache;
static mempool_t *pool;
static struct task_struct *thread;
static struct dentry *dbg_dir;
static struct shrinker tm_shrinker;

static void sample_free(struct kref *kref)
{
	struct task_sample *s = container_of(kref, struct task_sample, kref);

	mempool_free(s, pool);
}

/* call with tm.lock held */
static void sample_unlink(struct task_sample *s)
{
	list_del(&s->list);
	tm.nr_samples--;
	kref_put(&s->kref, sample_free);
}

static struct task_sample *save_sample(struct task_monitor *mon)
{
	struct task_struct *task;
	struct task_sample *s;

	task = get_pid_task(mon->pid, PIDTYPE_PID);
	if (!task)
		return NULL;

	s = mempool_alloc(pool, GFP_KERNEL);
	if (s) {
		kref_init(&s->kref);	/* the history's reference */
		kref_get(&s->kref);	/* the caller's, see tm_thread() */
		s->pid = pid_nr(mon->pid);
		s->utime = task->utime;
		s->stime = task->stime;
	}
	put_task_struct(task);
	return s;
}

static int tm_thread(void *arg)
{
	struct task_monitor *mon;
	struct task_sample *s;

	while (!kthread_should_stop()) {
		mutex_lock(&tm.lock);
		list_for_each_entry(mon, &tm.monitors, list) {
			s = save_sample(mon);
			if (!s)
				continue;
			list_add_tail(&s->list, &tm.samples);
			tm.nr_samples++;
			pr_debug("taskmonitor: pid %d usr %llu sys %llu\n", s->pid,
				 s->utime, s->stime);
			kref_put(&s->kref, sample_free);
		}
		mutex_unlock(&tm.lock);
		msleep(interval_ms);
	}
	return 0;
}

/* ------------------------------------------------------------------ sysfs */

/*
 * Lines are written from the end of the page backwards, newest sample
 * first, until the next one does not fit; then moved to the start.
 */
static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_sample *s;
	size_t end = PAGE_SIZE - 1, start = end;
	char line[80];
	int n;

	mutex_lock(&tm.lock);
	list_for_each_entry_reverse(s, &tm.samples, list) {
		n = scnprintf(line, sizeof(line), "pid %d usr %llu sys %llu\n",
			      s->pid, s->utime, s->stime);
		if (n > start)
			break;
		start -= n;
		memcpy(buf + start, line, n);
	}
	mutex_unlock(&tm.lock);

	memmove(buf, buf + start, end - start);
	buf[end - start] = '\0';
	return end - start;
}

static struct kobj_attribute tm_attr = __ATTR(taskmonitor, 0444,
					      taskmonitor_show, NULL);

/* --------------------------------------------------------------- shrinker */

static unsigned long tm_count(struct shrinker *shrink,
			      struct shrink_control *sc)
{
	return READ_ONCE(tm.nr_samples);
}

static unsigned long tm_scan(struct shrinker *shrink,
			     struct shrink_control *sc)
{
	unsigned long freed = 0;

	if (!mutex_trylock(&tm.lock))
		return SHRINK_STOP;
	while (freed < sc->nr_to_scan && !list_empty(&tm.samples)) {
		sample_unlink(list_first_entry(&tm.samples,
					       struct task_sample, list));
		freed++;
	}
	mutex_unlock(&tm.lock);
	return freed;
}

/* ---------------------------------------------------------------- debugfs */

static void *tm_start(struct seq_file *m, loff_t *pos)
{
	mutex_lock(&tm.lock);
	return seq_list_start(&tm.samples, *pos);
}

static void *tm_next(struct seq_file *m, void *v, loff_t *pos)
{
	return seq_list_next(v, &tm.samples, pos);
}

static void tm_stop(struct seq_file *m, void *v)
{
	mutex_unlock(&tm.lock);
}

static int tm_show(struct seq_file *m, void *v)
{
	struct task_sample *s = list_entry(v, struct task_sample, list);

	seq_printf(m, "pid %d usr %llu sys %llu\n", s->pid, s->utime, s->stime);
	return 0;
}

static const struct seq_operations tm_sops = {
	.start = tm_start,
	.next = tm_next,
	.stop = tm_stop,
	.show = tm_show,
};

static int tm_open(struct inode *inode, struct file *file)
{
	return seq_open(file, &tm_sops);
}

static struct task_monitor *find_monitor(pid_t nr)
{
	struct task_monitor *mon;

	list_for_each_entry(mon, &tm.monitors, list)
		if (pid_nr(mon->pid) == nr)
			return mon;
	return NULL;
}

static int monitor_pid(pid_t nr)
{
	struct task_monitor *mon;
	struct pid *pid;

	pid = find_get_pid(nr);
	if (!pid)
		return -ESRCH;
	mon = kmalloc(sizeof(*mon), GFP_KERNEL);
	if (!mon) {
		put_pid(pid);
		return -ENOMEM;
	}
	mon->pid = pid;

	mutex_lock(&tm.lock);
	if (find_monitor(nr)) {
		mutex_unlock(&tm.lock);
		put_pid(pid);
		kfree(mon);
		return -EEXIST;
	}
	list_add_tail(&mon->list, &tm.monitors);
	mutex_unlock(&tm.lock);
	return 0;
}

/* the samples already taken stay in the history */
static int unmonitor_pid(pid_t nr)
{
	struct task_monitor *mon;

	mutex_lock(&tm.lock);
	mon = find_monitor(nr);
	if (mon)
		list_del(&mon->list);
	mutex_unlock(&tm.lock);
	if (!mon)
		return -ENOENT;
	put_pid(mon->pid);
	kfree(mon);
	return 0;
}

static ssize_t tm_write(struct file *file, const char __user *ubuf,
			size_t len, loff_t *off)
{
	char kbuf[24];
	long val;
	int ret;

	if (len >= sizeof(kbuf))
		return -EINVAL;
	if (copy_from_user(kbuf, ubuf, len))
		return -EFAULT;
	kbuf[len] = '\0';

	ret = kstrtol(kbuf, 10, &val);
	if (ret)
		return ret;
	if (val > 0 && val <= PID_MAX_LIMIT)
		ret = monitor_pid(val);
	else if (val < 0 && val >= -PID_MAX_LIMIT)
		ret = unmonitor_pid(-val);
	else
		ret = -EINVAL;
	return ret ? ret : len;
}

static const struct file_operations tm_fops = {
	.owner = THIS_MODULE,
	.open = tm_open,
	.read = seq_read,
	.write = tm_write,
	.llseek = seq_lseek,
	.release = seq_release,
};

/* ------------------------------------------------------------------- init */

static void tm_cleanup(void)
{
	struct task_monitor *mon, *mtmp;
	struct task_sample *s, *stmp;

	mutex_lock(&tm.lock);
	list_for_each_entry_safe(s, stmp, &tm.samples, list)
		sample_unlink(s);
	list_for_each_entry_safe(mon, mtmp, &tm.monitors, list) {
		list_del(&mon->list);
		put_pid(mon->pid);
		kfree(mon);
	}
	mutex_unlock(&tm.lock);
}

static int __init tm_init(void)
{
	int ret;

	mutex_init(&tm.lock);
	INIT_LIST_HEAD(&tm.monitors);
	INIT_LIST_HEAD(&tm.samples);

	if (!interval_ms)
		interval_ms = 1;

	sample_cache = kmem_cache_create("task_sample", sizeof(struct task_sample),
					 0, 0, NULL);
	if (!sample_cache)
		return -ENOMEM;
	pool = mempool_create(16, mempool_alloc_slab, mempool_free_slab,
			      sample_cache);
	if (!pool) {
		ret = -ENOMEM;
		goto out_cache;
	}

	ret = monitor_pid(target);
	if (ret)
		goto out_pool;

	tm_shrinker.count_objects = tm_count;
	tm_shrinker.scan_objects = tm_scan;
	tm_shrinker.seeks = DEFAULT_SEEKS;
	ret = register_shrinker(&tm_shrinker);
	if (ret)
		goto out_monitors;

	ret = sysfs_create_file(kernel_kobj, &tm_attr.attr);
	if (ret)
		goto out_shrinker;

	dbg_dir = debugfs_create_dir("taskmonitor", NULL);
	debugfs_create_file("taskmonitor", 0600, dbg_dir, NULL, &tm_fops);

	thread = kthread_run(tm_thread, NULL, "tm_sampler");
	if (IS_ERR(thread)) {
		ret = PTR_ERR(thread);
		goto out_files;
	}
	return 0;

out_files:
	debugfs_remove_recursive(dbg_dir);
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
out_shrinker:
	unregister_shrinker(&tm_shrinker);
out_monitors:
	tm_cleanup();
out_pool:
	mempool_destroy(pool);
out_cache:
	kmem_cache_destroy(sample_cache);
	return ret;
}

static void __exit tm_exit(void)
{
	kthread_stop(thread);
	debugfs_remove_recursive(dbg_dir);
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
	unregister_shrinker(&tm_shrinker);
	tm_cleanup();
	mempool_destroy(pool);
	kmem_cache_destroy(sample_cache);
}

module_init(tm_init);
module_exit(tm_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Camille Dubois");
MODULE_DESCRIPTION("Monitors the CPU usage of processes");
