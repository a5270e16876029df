/*
 * PNL 2016-2017 -- TP 07 -- taskmonitor
 * Pierre Caron / Alice Meunier
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/init.h>
#include <linux/sched.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/shrinker.h>
#include <linux/sysfs.h>
#include <linux/kobject.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Pierre Caron, Alice Meunier");
MODULE_DESCRIPTION("taskmonitor");

static int target = 1;
module_param(target, int, S_IRUGO);

struct task_sample {
	struct list_head list;
	struct kref ref;
	cputime_t utime;
	cputime_t stime;
};

struct task_monitor {
	struct pid *pid;
	struct mutex lock;
	struct list_head samples;
	int nsamples;
};

static struct task_monitor *tm;
static struct task_struct *monitor_thread;
static struct kmem_cache *sample_cache;
static mempool_t *sample_pool;
static struct dentry *debugfs_file;

static void sample_release(struct kref *ref)
{
	struct task_sample *ts = container_of(ref, struct task_sample, ref);

	mempool_free(ts, sample_pool);
}

static int get_sample(struct task_sample *ts)
{
	struct task_struct *task;

	task = get_pid_task(tm->pid, PIDTYPE_PID);
	if (!task)
		return -ESRCH;
	task_cputime(task, &ts->utime, &ts->stime);
	put_task_struct(task);
	return 0;
}

static struct task_sample *save_sample(void)
{
	struct task_sample *ts;

	ts = mempool_alloc(sample_pool, GFP_KERNEL);
	if (!ts)
		return NULL;
	if (get_sample(ts)) {
		mempool_free(ts, sample_pool);
		return NULL;
	}
	kref_init(&ts->ref);
	kref_get(&ts->ref);
	mutex_lock(&tm->lock);
	list_add_tail(&ts->list, &tm->samples);
	tm->nsamples++;
	mutex_unlock(&tm->lock);
	return ts;
}

static int monitor_fn(void *unused)
{
	struct task_sample *ts;

	while (!kthread_should_stop()) {
		ts = save_sample();
		if (ts)
			kref_put(&ts->ref, sample_release);
		msleep(1000);
	}
	return 0;
}

/* sysfs */

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_sample *ts;
	char line[64];
	int len = 0, l, skip;

	mutex_lock(&tm->lock);
	/* count how many of the last samples fit, from the end */
	skip = tm->nsamples;
	list_for_each_entry_reverse(ts, &tm->samples, list) {
		l = scnprintf(line, sizeof(line), "pid %d usr %llu sys %llu\n",
			      pid_nr(tm->pid), (unsigned long long)ts->utime,
			      (unsigned long long)ts->stime);
		if (len + l >= PAGE_SIZE)
			break;
		len += l;
		skip--;
	}
	len = 0;
	list_for_each_entry(ts, &tm->samples, list) {
		if (skip > 0) {
			skip--;
			continue;
		}
		len += scnprintf(buf + len, PAGE_SIZE - len,
				 "pid %d usr %llu sys %llu\n", pid_nr(tm->pid),
				 (unsigned long long)ts->utime,
				 (unsigned long long)ts->stime);
	}
	mutex_unlock(&tm->lock);
	return len;
}

static struct kobj_attribute taskmonitor_attr =
	__ATTR(taskmonitor, S_IRUGO, taskmonitor_show, NULL);

/* shrinker */

static unsigned long samples_count(struct shrinker *s,
				     struct shrink_control *sc)
{
	return tm->nsamples;
}

static unsigned long samples_scan(struct shrinker *s,
				    struct shrink_control *sc)
{
	struct task_sample *ts, *tmp;
	unsigned long nr = 0;

	if (!mutex_trylock(&tm->lock))
		return SHRINK_STOP;
	list_for_each_entry_safe(ts, tmp, &tm->samples, list) {
		if (nr >= sc->nr_to_scan)
			break;
		list_del(&ts->list);
		tm->nsamples--;
		kref_put(&ts->ref, sample_release);
		nr++;
	}
	mutex_unlock(&tm->lock);
	return nr;
}

static struct shrinker sample_shrinker = {
	.count_objects = samples_count,
	.scan_objects = samples_scan,
	.seeks = DEFAULT_SEEKS,
};

/* debugfs */

static void *history_start(struct seq_file *s, loff_t *pos)
{
	struct list_head *p;
	loff_t n = *pos;

	mutex_lock(&tm->lock);
	p = tm->samples.next;
	if (n > 0) {
		/* skip the samples already printed */
		while (n-- >= 0 && p != &tm->samples)
			p = p->next;
	}
	return p == &tm->samples ? NULL : p;
}

static void *history_next(struct seq_file *s, void *v, loff_t *pos)
{
	struct list_head *p = v;

	(*pos)++;
	p = p->next;
	return p == &tm->samples ? NULL : p;
}

static void history_stop(struct seq_file *s, void *v)
{
	mutex_unlock(&tm->lock);
}

static int history_show(struct seq_file *s, void *v)
{
	struct task_sample *ts = list_entry(v, struct task_sample, list);

	seq_printf(s, "pid %d usr %llu sys %llu\n", pid_nr(tm->pid),
		   (unsigned long long)ts->utime, (unsigned long long)ts->stime);
	return 0;
}

static const struct seq_operations history_sops = {
	.start = history_start,
	.next = history_next,
	.stop = history_stop,
	.show = history_show,
};

static int history_open(struct inode *inode, struct file *file)
{
	return seq_open(file, &history_sops);
}

static const struct file_operations history_fops = {
	.owner = THIS_MODULE,
	.open = history_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = seq_release,
};

/* module */

static int __init taskmonitor_init(void)
{
	tm = kmalloc(sizeof(*tm), GFP_KERNEL);
	if (!tm)
		goto fail;
	tm->pid = find_get_pid(target);
	if (!tm->pid)
		goto fail_tm;
	mutex_init(&tm->lock);
	INIT_LIST_HEAD(&tm->samples);
	tm->nsamples = 0;

	sample_cache = KMEM_CACHE(task_sample, 0);
	if (!sample_cache)
		goto fail_pid;
	sample_pool = mempool_create_slab_pool(4, sample_cache);
	if (!sample_pool)
		goto fail_cache;
	if (register_shrinker(&sample_shrinker))
		goto fail_pool;
	if (sysfs_create_file(kernel_kobj, &taskmonitor_attr.attr))
		goto fail_shrinker;
	debugfs_file = debugfs_create_file("taskmonitor", 0444, NULL, NULL,
					   &history_fops);
	if (!debugfs_file)
		goto fail_sysfs;
	monitor_thread = kthread_run(monitor_fn, NULL, "monitor_fn");
	if (IS_ERR(monitor_thread))
		goto fail_debugfs;
	return 0;

fail_debugfs:
	debugfs_remove(debugfs_file);
fail_sysfs:
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
fail_shrinker:
	unregister_shrinker(&sample_shrinker);
fail_pool:
	mempool_destroy(sample_pool);
fail_cache:
	kmem_cache_destroy(sample_cache);
fail_pid:
	put_pid(tm->pid);
fail_tm:
	kfree(tm);
fail:
	return -ENOMEM;
}

static void __exit taskmonitor_exit(void)
{
	struct task_sample *ts, *tmp;

	kthread_stop(monitor_thread);
	debugfs_remove(debugfs_file);
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
	unregister_shrinker(&sample_shrinker);
	list_for_each_entry_safe(ts, tmp, &tm->samples, list) {
		list_del(&ts->list);
		kref_put(&ts->ref, sample_release);
	}
	mempool_destroy(sample_pool);
	kmem_cache_destroy(sample_cache);
	put_pid(tm->pid);
	kfree(tm);
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);
