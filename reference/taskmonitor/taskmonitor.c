// SPDX-License-Identifier: GPL-2.0
/*
 * taskmonitor - reference solution of PNL TP 07 (memory management)
 *
 * Stage switch
 *   TM_STAGE (1..7, default 7) selects the solution as it stands at the end
 *   of exercise TM_STAGE, e.g. "make ... ccflags-y=-DTM_STAGE=3":
 *     1  history of samples in a list, sampling kthread, sysfs file
 *     2  + shrinker
 *     3  + slab cache "task_sample" (KMEM_CACHE), sizeof/ksize printed at load
 *     4  + mempool over that cache (TM_POOL_MIN reserved samples)
 *     5  + samples reference counted with kref
 *     6  + whole history in debugfs through seq_file
 *     7  + several PIDs, added and removed by writing to the debugfs file
 *
 * Module parameters (read-only once loaded)
 *   target=PID    PID to monitor from load time. Stages 1-6: required;
 *                 missing, 0 or negative -> -EINVAL, no such process -> -ESRCH.
 *                 Stage 7: optional, 0 (the default) monitors nothing.
 *   period_ms=N   sampling period in milliseconds, default 1000; 0 -> -EINVAL.
 *
 * Files
 *   /sys/kernel/taskmonitor (0444)
 *     The latest samples, oldest first, one per line:
 *       "pid %d usr %llu sys %llu\n"
 *     usr and sys are the cumulative user and system CPU times, in
 *     nanoseconds, of the task with that PID (task_cputime_adjusted(): that
 *     thread only), sampled at load and then every period_ms by the kthread
 *     "taskmonitor". The output never exceeds PAGE_SIZE - 1 bytes.
 *     Stage 7: monitors in increasing PID order, the page shared fairly
 *     between them (room a monitor leaves unused goes to the next ones).
 *   /sys/kernel/debug/taskmonitor (stage >= 6; 0444, 0644 at stage 7)
 *     read: the whole history, same format, oldest first (per PID, in
 *     increasing PID order, at stage 7). The file position is a stable
 *     key (sample number; PID and sample number at stage 7), so short reads
 *     neither lose nor repeat lines; only samples reclaimed in the meantime
 *     are skipped.
 *     write (stage 7): "N" starts monitoring PID N, "-N" stops monitoring it
 *     and frees its samples; one trailing newline is allowed. Errors:
 *       -EINVAL  not a decimal integer (at most 15 bytes), or 0
 *       -ESRCH   no process with PID N
 *       -EEXIST  PID N already monitored
 *       -ENOENT  "-N" while PID N is not monitored
 *
 * Exited processes
 *   Stages 1-6: sampling stops, the history is kept until rmmod.
 *   Stage 7: the kthread drops the monitor of a process that has exited (been
 *   reaped), freeing its samples, exactly as "-N" would.
 *
 * PIDs are looked up with find_get_pid() (the caller's PID namespace) and
 * shown as global PID numbers; both agree in the initial namespace.
 *
 * Locking
 *   tm->lock protects tm->samples, tm->nr_samples and tm->first_seq.
 *   Stage 7: tasks_lock protects the list of monitors and nests outside every
 *   tm->lock. Every user of a monitor holds tasks_lock, so a monitor unlinked
 *   under tasks_lock may be freed once the lock is released. The shrinker
 *   only trylocks, so reclaim entered with any of these locks held cannot
 *   deadlock.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/debugfs.h>
#include <linux/err.h>
#include <linux/init.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/kobject.h>
#include <linux/kref.h>
#include <linux/kthread.h>
#include <linux/list.h>
#include <linux/mempool.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/sched/cputime.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/threads.h>
#include <linux/uaccess.h>
#include <linux/version.h>

#ifndef TM_STAGE
#define TM_STAGE 7
#endif
#if TM_STAGE < 1 || TM_STAGE > 7
#error "TM_STAGE must be between 1 and 7"
#endif

#define TM_LINE_FMT	"pid %d usr %llu sys %llu\n"
/* The shortest possible line: bounds the number of lines in a page. */
#define TM_LINE_MIN	(sizeof("pid 1 usr 0 sys 0\n") - 1)
#define TM_POOL_MIN	16

static int target;
module_param(target, int, 0444);
#if TM_STAGE >= 7
MODULE_PARM_DESC(target, "PID to monitor from load time (optional, 0: none)");
#else
MODULE_PARM_DESC(target, "PID to monitor (required)");
#endif

static unsigned int period_ms = 1000;
module_param(period_ms, uint, 0444);
MODULE_PARM_DESC(period_ms, "Sampling period in milliseconds (default 1000)");

struct task_sample {
	struct list_head list;
	u64 utime;
	u64 stime;
#if TM_STAGE >= 5
	struct kref refcount;
#endif
};

struct task_monitor {
#if TM_STAGE >= 7
	struct list_head node;		/* in tasks, under tasks_lock */
#endif
	struct pid *pid;
	struct mutex lock;		/* protects the fields below */
	struct list_head samples;	/* oldest first */
	unsigned long nr_samples;	/* may be read with READ_ONCE() */
#if TM_STAGE >= 6
	u64 first_seq;			/* number of the oldest sample */
#endif
};

#if TM_STAGE >= 7
static LIST_HEAD(tasks);		/* by increasing PID, one per PID */
static DEFINE_MUTEX(tasks_lock);
static atomic_long_t nr_samples_total;
#else
static struct task_monitor *monitor;
#endif

static struct task_struct *monitor_thread;
#if TM_STAGE >= 3
static struct kmem_cache *sample_cache;
#endif
#if TM_STAGE >= 4
static mempool_t *sample_pool;
#endif
#if TM_STAGE >= 6
static struct dentry *tm_debugfs;
#endif

/* Samples: allocation and references */

static struct task_sample *sample_alloc(void)
{
#if TM_STAGE >= 4
	return mempool_alloc(sample_pool, GFP_KERNEL);
#elif TM_STAGE >= 3
	return kmem_cache_alloc(sample_cache, GFP_KERNEL);
#else
	return kmalloc(sizeof(struct task_sample), GFP_KERNEL);
#endif
}

static void sample_free(struct task_sample *ts)
{
#if TM_STAGE >= 4
	mempool_free(ts, sample_pool);
#elif TM_STAGE >= 3
	kmem_cache_free(sample_cache, ts);
#else
	kfree(ts);
#endif
}

#if TM_STAGE >= 5
static void sample_release(struct kref *kref)
{
	sample_free(container_of(kref, struct task_sample, refcount));
}
#endif

/* Drop a reference to @ts; before kref (stage < 5) the list owns it alone. */
static void sample_put(struct task_sample *ts)
{
#if TM_STAGE >= 5
	kref_put(&ts->refcount, sample_release);
#else
	sample_free(ts);
#endif
}

/* Monitors */

static struct task_monitor *monitor_create(pid_t nr)
{
	struct task_monitor *tm;
	struct task_struct *task;
	struct pid *pid;
	int err;

	pid = find_get_pid(nr);
	if (!pid)
		return ERR_PTR(-ESRCH);
	/* The number may survive as a process group or session ID only. */
	task = get_pid_task(pid, PIDTYPE_PID);
	if (!task) {
		err = -ESRCH;
		goto err_put_pid;
	}
	put_task_struct(task);

	tm = kzalloc(sizeof(*tm), GFP_KERNEL);
	if (!tm) {
		err = -ENOMEM;
		goto err_put_pid;
	}
	tm->pid = pid;
	mutex_init(&tm->lock);
	INIT_LIST_HEAD(&tm->samples);
	return tm;

err_put_pid:
	put_pid(pid);
	return ERR_PTR(err);
}

static void monitor_append(struct task_monitor *tm, struct task_sample *ts)
{
	mutex_lock(&tm->lock);
	list_add_tail(&ts->list, &tm->samples);
	WRITE_ONCE(tm->nr_samples, tm->nr_samples + 1);
#if TM_STAGE >= 7
	atomic_long_inc(&nr_samples_total);
#endif
	mutex_unlock(&tm->lock);
}

/* Unlink the oldest sample of @tm and drop the list's reference to it. */
static void monitor_drop_oldest(struct task_monitor *tm)
{
	struct task_sample *ts;

	lockdep_assert_held(&tm->lock);
	ts = list_first_entry(&tm->samples, struct task_sample, list);
	list_del(&ts->list);
	WRITE_ONCE(tm->nr_samples, tm->nr_samples - 1);
#if TM_STAGE >= 6
	tm->first_seq++;
#endif
#if TM_STAGE >= 7
	atomic_long_dec(&nr_samples_total);
#endif
	sample_put(ts);
}

/* Free @tm and its samples; nobody else may reach @tm any more. */
static void monitor_free(struct task_monitor *tm)
{
	mutex_lock(&tm->lock);
	while (!list_empty(&tm->samples))
		monitor_drop_oldest(tm);
	mutex_unlock(&tm->lock);
	mutex_destroy(&tm->lock);
	put_pid(tm->pid);
	kfree(tm);
}

static void monitors_free_all(void)
{
#if TM_STAGE >= 7
	struct task_monitor *tm, *tmp;

	list_for_each_entry_safe(tm, tmp, &tasks, node) {
		list_del(&tm->node);
		monitor_free(tm);
	}
#else
	monitor_free(monitor);
#endif
}

/* Sampling */

static void get_sample(struct task_struct *task, struct task_sample *ts)
{
	task_cputime_adjusted(task, &ts->utime, &ts->stime);
}

#if TM_STAGE >= 5
/*
 * Append a new sample of @task to the history of @tm. Returns it with a
 * reference for the caller (the list holds another one), or NULL.
 */
static struct task_sample *save_sample(struct task_monitor *tm,
				       struct task_struct *task)
{
	struct task_sample *ts = sample_alloc();

	if (!ts)
		return NULL;
	get_sample(task, ts);
	kref_init(&ts->refcount);	/* the list's reference */
	kref_get(&ts->refcount);	/* the caller's reference */
	monitor_append(tm, ts);
	return ts;
}
#else
static void save_sample(struct task_monitor *tm, struct task_struct *task)
{
	struct task_sample *ts = sample_alloc();

	if (!ts)
		return;
	get_sample(task, ts);
	monitor_append(tm, ts);
}
#endif

/* Take a sample of the task monitored by @tm; false if it has exited. */
static bool monitor_sample(struct task_monitor *tm)
{
	struct task_struct *task;
#if TM_STAGE >= 5
	struct task_sample *ts;
#endif

	task = get_pid_task(tm->pid, PIDTYPE_PID);
	if (!task)
		return false;
#if TM_STAGE >= 5
	ts = save_sample(tm, task);
	if (ts) {
		pr_debug(TM_LINE_FMT, pid_nr(tm->pid), ts->utime, ts->stime);
		sample_put(ts);
	}
#else
	save_sample(tm, task);
#endif
	put_task_struct(task);
	return true;
}

#if TM_STAGE >= 7
static void monitor_tick(void)
{
	struct task_monitor *tm, *tmp;
	LIST_HEAD(dead);

	mutex_lock(&tasks_lock);
	list_for_each_entry_safe(tm, tmp, &tasks, node) {
		if (!monitor_sample(tm))
			list_move_tail(&tm->node, &dead);
	}
	mutex_unlock(&tasks_lock);

	list_for_each_entry_safe(tm, tmp, &dead, node) {
		pr_info("pid %d has exited, no longer monitored\n",
			pid_nr(tm->pid));
		list_del(&tm->node);
		monitor_free(tm);
	}
}
#else
static void monitor_tick(void)
{
	if (!monitor_sample(monitor))
		pr_info_once("pid %d has exited, sampling stopped\n",
			     pid_nr(monitor->pid));
}
#endif

static int monitor_fn(void *unused)
{
	const unsigned long period = msecs_to_jiffies(period_ms);

	for (;;) {
		monitor_tick();
		/* State first: kthread_stop()'s wakeup cannot be lost. */
		set_current_state(TASK_INTERRUPTIBLE);
		if (kthread_should_stop())
			break;
		schedule_timeout(period);
	}
	__set_current_state(TASK_RUNNING);
	return 0;
}

/* Stage 7: adding and removing monitors */

#if TM_STAGE >= 7
static int monitor_add(pid_t nr)
{
	struct task_monitor *tm, *pos, *stale = NULL;
	struct list_head *where = &tasks;
	pid_t gnr;
	int err;

	tm = monitor_create(nr);
	if (IS_ERR(tm))
		return PTR_ERR(tm);
	gnr = pid_nr(tm->pid);

	err = mutex_lock_interruptible(&tasks_lock);
	if (err)
		goto err_free;
	list_for_each_entry(pos, &tasks, node) {
		if (pid_nr(pos->pid) < gnr)
			continue;
		if (pid_nr(pos->pid) == gnr) {
			if (pos->pid == tm->pid) {
				err = -EEXIST;
				goto err_unlock;
			}
			/* An exited process whose PID has been reused. */
			stale = pos;
		}
		where = &pos->node;
		break;
	}
	list_add_tail(&tm->node, where);
	if (stale)
		list_del(&stale->node);
	mutex_unlock(&tasks_lock);

	if (stale)
		monitor_free(stale);
	return 0;

err_unlock:
	mutex_unlock(&tasks_lock);
err_free:
	monitor_free(tm);
	return err;
}

static int monitor_remove(pid_t nr)
{
	struct task_monitor *tm;
	int err;

	err = mutex_lock_interruptible(&tasks_lock);
	if (err)
		return err;
	list_for_each_entry(tm, &tasks, node) {
		if (pid_nr(tm->pid) == nr) {
			list_del(&tm->node);
			mutex_unlock(&tasks_lock);
			monitor_free(tm);
			return 0;
		}
	}
	mutex_unlock(&tasks_lock);
	return -ENOENT;
}
#endif

/* Shrinker */

#if TM_STAGE >= 2
/* Free up to @nr oldest samples of @tm; SHRINK_STOP if @tm is busy. */
static unsigned long monitor_shrink(struct task_monitor *tm, unsigned long nr)
{
	unsigned long freed = 0;

	if (!mutex_trylock(&tm->lock))
		return SHRINK_STOP;
	while (freed < nr && !list_empty(&tm->samples)) {
		monitor_drop_oldest(tm);
		freed++;
	}
	mutex_unlock(&tm->lock);
	return freed;
}

static unsigned long tm_shrink_count(struct shrinker *shrinker,
				     struct shrink_control *sc)
{
#if TM_STAGE >= 7
	unsigned long nr = atomic_long_read(&nr_samples_total);
#else
	unsigned long nr = READ_ONCE(monitor->nr_samples);
#endif

	return nr ? nr : SHRINK_EMPTY;
}

static unsigned long tm_shrink_scan(struct shrinker *shrinker,
				    struct shrink_control *sc)
{
#if TM_STAGE >= 7
	struct task_monitor *tm;
	unsigned long n, freed = 0;
	bool progress = true;

	if (!mutex_trylock(&tasks_lock))
		return SHRINK_STOP;
	/* Round robin: the oldest sample of each monitor in turn. */
	while (progress && freed < sc->nr_to_scan) {
		progress = false;
		list_for_each_entry(tm, &tasks, node) {
			if (freed >= sc->nr_to_scan)
				break;
			n = monitor_shrink(tm, 1);
			if (n && n != SHRINK_STOP) {
				freed += n;
				progress = true;
			}
		}
	}
	mutex_unlock(&tasks_lock);
	return freed;
#else
	return monitor_shrink(monitor, sc->nr_to_scan);
#endif
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
static struct shrinker *tm_shrinker;

static int tm_shrinker_register(void)
{
	tm_shrinker = shrinker_alloc(0, "taskmonitor");
	if (!tm_shrinker)
		return -ENOMEM;
	tm_shrinker->count_objects = tm_shrink_count;
	tm_shrinker->scan_objects = tm_shrink_scan;
	tm_shrinker->seeks = DEFAULT_SEEKS;
	shrinker_register(tm_shrinker);
	return 0;
}

static void tm_shrinker_unregister(void)
{
	shrinker_free(tm_shrinker);
}
#else
static struct shrinker tm_shrinker = {
	.count_objects = tm_shrink_count,
	.scan_objects = tm_shrink_scan,
	.seeks = DEFAULT_SEEKS,
};

static int tm_shrinker_register(void)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 0, 0)
	return register_shrinker(&tm_shrinker, "taskmonitor");
#else
	return register_shrinker(&tm_shrinker);
#endif
}

static void tm_shrinker_unregister(void)
{
	unregister_shrinker(&tm_shrinker);
}
#endif
#endif /* TM_STAGE >= 2 */

/* sysfs: /sys/kernel/taskmonitor */

/*
 * Print into @buf, from offset @at, the latest samples of @tm that fit in
 * @room bytes, oldest first. Returns the number of bytes printed (or
 * -ENOMEM from stage 5, which needs an array of pinned samples).
 */
#if TM_STAGE >= 5
static ssize_t monitor_show(struct task_monitor *tm, char *buf, int at,
			    size_t room)
{
	unsigned int n = 0, max = room / TM_LINE_MIN;
	pid_t nr = pid_nr(tm->pid);
	struct task_sample *ts, **show;
	size_t need = 0;
	int len = 0;

	if (!max)
		return 0;
	show = kmalloc_array(max, sizeof(*show), GFP_KERNEL);
	if (!show)
		return -ENOMEM;

	/* Walk back from the newest sample, pinning those that fit... */
	mutex_lock(&tm->lock);
	list_for_each_entry_reverse(ts, &tm->samples, list) {
		size_t l = snprintf(NULL, 0, TM_LINE_FMT, nr, ts->utime,
				    ts->stime);

		if (n == max || need + l > room)
			break;
		need += l;
		kref_get(&ts->refcount);
		show[n++] = ts;
	}
	mutex_unlock(&tm->lock);

	/*
	 * ...then print them oldest first without the lock: the shrinker may
	 * unlink them meanwhile, but our references keep them alive.
	 */
	while (n) {
		ts = show[--n];
		len += sysfs_emit_at(buf, at + len, TM_LINE_FMT, nr, ts->utime,
				     ts->stime);
		sample_put(ts);
	}
	kfree(show);
	return len;
}
#else
static ssize_t monitor_show(struct task_monitor *tm, char *buf, int at,
			    size_t room)
{
	struct task_sample *ts, *first = NULL;
	pid_t nr = pid_nr(tm->pid);
	size_t need = 0;
	int len = 0;

	mutex_lock(&tm->lock);
	/* Walk back from the newest sample to find how many fit... */
	list_for_each_entry_reverse(ts, &tm->samples, list) {
		size_t l = snprintf(NULL, 0, TM_LINE_FMT, nr, ts->utime,
				    ts->stime);

		if (need + l > room)
			break;
		need += l;
		first = ts;
	}
	/* ...then print them oldest first. */
	if (first) {
		ts = first;
		list_for_each_entry_from(ts, &tm->samples, list)
			len += sysfs_emit_at(buf, at + len, TM_LINE_FMT, nr,
					     ts->utime, ts->stime);
	}
	mutex_unlock(&tm->lock);
	return len;
}
#endif

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
#if TM_STAGE >= 7
	struct task_monitor *tm;
	unsigned int left = 0;
	ssize_t ret = 0;
	size_t room;
	int len = 0;

	ret = mutex_lock_interruptible(&tasks_lock);
	if (ret)
		return ret;
	list_for_each_entry(tm, &tasks, node)
		left++;
	/* A fair share of what is left for each monitor. */
	list_for_each_entry(tm, &tasks, node) {
		room = (PAGE_SIZE - 1 - len) / left--;
		ret = monitor_show(tm, buf, len, room);
		if (ret < 0)
			break;
		len += ret;
	}
	mutex_unlock(&tasks_lock);
	return ret < 0 ? ret : len;
#else
	return monitor_show(monitor, buf, 0, PAGE_SIZE - 1);
#endif
}

static struct kobj_attribute taskmonitor_attr = __ATTR_RO(taskmonitor);

/* debugfs: /sys/kernel/debug/taskmonitor */

#if TM_STAGE >= 6
/*
 * Return the sample of @tm numbered *@seq or, if that one has been reclaimed,
 * the oldest one (updating *@seq). NULL past the newest sample.
 */
static struct task_sample *monitor_seek(struct task_monitor *tm, u64 *seq)
{
	struct task_sample *ts;
	u64 skip;

	lockdep_assert_held(&tm->lock);
	if (*seq < tm->first_seq)
		*seq = tm->first_seq;
	skip = *seq - tm->first_seq;
	if (skip >= tm->nr_samples)
		return NULL;
	list_for_each_entry(ts, &tm->samples, list) {
		if (!skip--)
			return ts;
	}
	return NULL;
}

/*
 * While a session (start .. stop) is running, m->private is the monitor whose
 * lock is held, if any (and, at stage 7, tasks_lock is held too).
 */
#if TM_STAGE >= 7
/*
 * File position: (PID << TM_POS_SHIFT) | sample number. PIDs are below
 * PID_MAX_LIMIT (2^22); 40 bits of sample numbers last 34 years at 1 kHz.
 */
#define TM_POS_SHIFT	40
#define TM_POS_MASK	(BIT_ULL(TM_POS_SHIFT) - 1)

static loff_t tm_pos(struct task_monitor *tm, u64 seq)
{
	return ((loff_t)pid_nr(tm->pid) << TM_POS_SHIFT) | (seq & TM_POS_MASK);
}

static void *tm_seq_start(struct seq_file *m, loff_t *pos)
{
	pid_t nr = *pos >> TM_POS_SHIFT;
	struct task_monitor *tm;
	struct task_sample *ts;
	u64 seq;
	int err;

	m->private = NULL;
	err = mutex_lock_interruptible(&tasks_lock);
	if (err)
		return ERR_PTR(err);
	list_for_each_entry(tm, &tasks, node) {
		if (pid_nr(tm->pid) < nr)
			continue;
		seq = pid_nr(tm->pid) == nr ? *pos & TM_POS_MASK : 0;
		mutex_lock(&tm->lock);
		ts = monitor_seek(tm, &seq);
		if (ts) {
			m->private = tm;
			*pos = tm_pos(tm, seq);
			return ts;
		}
		mutex_unlock(&tm->lock);
	}
	return NULL;
}
#else
static void *tm_seq_start(struct seq_file *m, loff_t *pos)
{
	struct task_sample *ts;
	u64 seq = *pos;
	int err;

	err = mutex_lock_interruptible(&monitor->lock);
	if (err)
		return ERR_PTR(err);
	m->private = monitor;
	ts = monitor_seek(monitor, &seq);
	*pos = seq;
	return ts;
}
#endif

static void *tm_seq_next(struct seq_file *m, void *v, loff_t *pos)
{
	struct task_monitor *tm = m->private;
	struct task_sample *ts = v;

	++*pos;
	if (!list_is_last(&ts->list, &tm->samples))
		return list_next_entry(ts, list);
#if TM_STAGE >= 7
	/* Hand over to the next monitor that has samples. */
	mutex_unlock(&tm->lock);
	m->private = NULL;
	list_for_each_entry_continue(tm, &tasks, node) {
		mutex_lock(&tm->lock);
		if (!list_empty(&tm->samples)) {
			m->private = tm;
			*pos = tm_pos(tm, tm->first_seq);
			return list_first_entry(&tm->samples,
						struct task_sample, list);
		}
		mutex_unlock(&tm->lock);
	}
#endif
	return NULL;
}

static void tm_seq_stop(struct seq_file *m, void *v)
{
	struct task_monitor *tm = m->private;

	if (IS_ERR(v))
		return;
	if (tm)
		mutex_unlock(&tm->lock);
#if TM_STAGE >= 7
	mutex_unlock(&tasks_lock);
#endif
}

static int tm_seq_show(struct seq_file *m, void *v)
{
	struct task_monitor *tm = m->private;
	struct task_sample *ts = v;

	seq_printf(m, TM_LINE_FMT, pid_nr(tm->pid), ts->utime, ts->stime);
	return 0;
}

static const struct seq_operations tm_seq_ops = {
	.start = tm_seq_start,
	.next = tm_seq_next,
	.stop = tm_seq_stop,
	.show = tm_seq_show,
};

static int tm_debugfs_open(struct inode *inode, struct file *file)
{
	return seq_open(file, &tm_seq_ops);
}

#if TM_STAGE >= 7
static ssize_t tm_debugfs_write(struct file *file, const char __user *ubuf,
				size_t count, loff_t *ppos)
{
	char buf[16];
	int nr, err;

	if (!count || count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';
	if (kstrtoint(buf, 10, &nr) || !nr)
		return -EINVAL;

	/* -INT_MIN overflows, and is no PID anyway. */
	if (nr > 0)
		err = monitor_add(nr);
	else if (nr == INT_MIN)
		err = -ENOENT;
	else
		err = monitor_remove(-nr);
	if (err)
		return err;
	return count;
}
#define TM_DEBUGFS_MODE	0644
#else
#define TM_DEBUGFS_MODE	0444
#endif

static const struct file_operations tm_debugfs_fops = {
	.owner = THIS_MODULE,
	.open = tm_debugfs_open,
	.read = seq_read,
#if TM_STAGE >= 7
	.write = tm_debugfs_write,
#endif
	.llseek = seq_lseek,
	.release = seq_release,
};
#endif /* TM_STAGE >= 6 */

/* Module init and exit */

#if TM_STAGE >= 3
static int __init tm_print_sizes(void)
{
	struct task_sample *ts = sample_alloc();

	if (!ts)
		return -ENOMEM;
	pr_info("sizeof(struct task_sample)=%zu ksize=%zu\n", sizeof(*ts),
		ksize(ts));
	sample_free(ts);
	return 0;
}
#endif

static int __init taskmonitor_init(void)
{
	int err;

#if TM_STAGE >= 7
	BUILD_BUG_ON(PID_MAX_LIMIT > 1LL << (63 - TM_POS_SHIFT));
	if (target < 0)
		return -EINVAL;
#else
	if (target <= 0)
		return -EINVAL;
#endif
	if (!period_ms)
		return -EINVAL;

#if TM_STAGE >= 3
	sample_cache = KMEM_CACHE(task_sample, 0);
	if (!sample_cache)
		return -ENOMEM;
#endif
#if TM_STAGE >= 4
	sample_pool = mempool_create_slab_pool(TM_POOL_MIN, sample_cache);
	if (!sample_pool) {
		err = -ENOMEM;
		goto err_destroy_cache;
	}
#endif
#if TM_STAGE >= 3
	err = tm_print_sizes();
	if (err)
		goto err_destroy_pool;
#endif

#if TM_STAGE >= 7
	if (target) {
		err = monitor_add(target);
		if (err)
			goto err_destroy_pool;
	}
#else
	monitor = monitor_create(target);
	if (IS_ERR(monitor)) {
		err = PTR_ERR(monitor);
		goto err_destroy_pool;
	}
#endif

	monitor_thread = kthread_run(monitor_fn, NULL, "taskmonitor");
	if (IS_ERR(monitor_thread)) {
		err = PTR_ERR(monitor_thread);
		goto err_free_monitors;
	}
#if TM_STAGE >= 2
	err = tm_shrinker_register();
	if (err)
		goto err_stop_thread;
#endif
	err = sysfs_create_file(kernel_kobj, &taskmonitor_attr.attr);
	if (err)
		goto err_unregister_shrinker;
#if TM_STAGE >= 6
	/* The control interface at stage 7: failing to create it is fatal. */
	tm_debugfs = debugfs_create_file("taskmonitor", TM_DEBUGFS_MODE, NULL,
					 NULL, &tm_debugfs_fops);
	if (IS_ERR(tm_debugfs)) {
		err = PTR_ERR(tm_debugfs);
		goto err_remove_sysfs;
	}
#endif

	pr_info("stage %d, target %d, period %u ms\n", TM_STAGE, target,
		period_ms);
	return 0;

#if TM_STAGE >= 6
err_remove_sysfs:
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
#endif
err_unregister_shrinker:
#if TM_STAGE >= 2
	tm_shrinker_unregister();
err_stop_thread:
#endif
	kthread_stop(monitor_thread);
err_free_monitors:
	monitors_free_all();
err_destroy_pool:
#if TM_STAGE >= 4
	mempool_destroy(sample_pool);
err_destroy_cache:
#endif
#if TM_STAGE >= 3
	kmem_cache_destroy(sample_cache);
#endif
	return err;
}
module_init(taskmonitor_init);

static void __exit taskmonitor_exit(void)
{
#if TM_STAGE >= 6
	debugfs_remove(tm_debugfs);
#endif
	sysfs_remove_file(kernel_kobj, &taskmonitor_attr.attr);
#if TM_STAGE >= 2
	tm_shrinker_unregister();
#endif
	kthread_stop(monitor_thread);
	monitors_free_all();
#if TM_STAGE >= 4
	mempool_destroy(sample_pool);
#endif
#if TM_STAGE >= 3
	kmem_cache_destroy(sample_cache);
#endif
}
module_exit(taskmonitor_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("PNL teaching team");
MODULE_DESCRIPTION("Sample the CPU times of processes (PNL TP 07 reference)");
