#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/pid.h>
#include <linux/slab.h>
#include <linux/mempool.h>
#include <linux/kref.h>
#include <linux/mutex.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Nicolas Garnier");
MODULE_DESCRIPTION("taskmonitor TP7");

int target = 0;
module_param(target, int, 0);

struct task_sample {
	struct list_head list;
	struct kref ref;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct pid *pid;
	struct list_head samples;
	int n;
	struct mutex mtx;
};

struct task_monitor *tmon;
struct task_struct *tmon_thread;
mempool_t *tmon_pool;

void sample_free(struct kref *ref)
{
	struct task_sample *s = container_of(ref, struct task_sample, ref);
	mempool_free(s, tmon_pool);
}

struct task_sample *save_sample(void)
{
	struct task_struct *t;
	struct task_sample *s;

	t = get_pid_task(tmon->pid, PIDTYPE_PID);
	if (!t)
		return NULL;
	s = mempool_alloc(tmon_pool, GFP_KERNEL);
	if (!s) {
		put_task_struct(t);
		return NULL;
	}
	task_cputime_adjusted(t, &s->utime, &s->stime);
	put_task_struct(t);

	kref_init(&s->ref);
	kref_get(&s->ref);
	mutex_lock(&tmon->mtx);
	list_add_tail(&s->list, &tmon->samples);
	tmon->n++;
	mutex_unlock(&tmon->mtx);
	return s;
}

int monitor_fn(void *data)
{
	struct task_sample *s;
	while (!kthread_should_stop()) {
		s = save_sample();
		if (s)
			kref_put(&s->ref, sample_free);
		msleep_interruptible(1000);
	}
	return 0;
}

static ssize_t taskmonitor_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	struct task_sample *s;
	struct list_head *pos;
	int len = 0, lsize;
	char tmp[64];
	pid_t pid = pid_nr(tmon->pid);

	mutex_lock(&tmon->mtx);
	/* go back from the newest sample as long as the lines fit */
	pos = tmon->samples.prev;
	lsize = 0;
	while (pos != &tmon->samples) {
		s = list_entry(pos, struct task_sample, list);
		lsize += scnprintf(tmp, sizeof(tmp), "pid %d usr %llu sys %llu\n", pid, s->utime, s->stime);
		if (lsize >= PAGE_SIZE)
			break;
		pos = pos->prev;
	}
	/* pos is before the first sample to print */
	for (pos = pos->next; pos != &tmon->samples; pos = pos->next) {
		s = list_entry(pos, struct task_sample, list);
		len += sysfs_emit_at(buf, len, "pid %d usr %llu sys %llu\n", pid, s->utime, s->stime);
	}
	mutex_unlock(&tmon->mtx);
	return len;
}

static struct kobj_attribute tm_attr = __ATTR(taskmonitor, 0444, taskmonitor_show, NULL);

static unsigned long count_objects(struct shrinker *shrink, struct shrink_control *sc)
{
	return tmon->n;
}

static unsigned long scan_objects(struct shrinker *shrink, struct shrink_control *sc)
{
	struct task_sample *s, *tmp;
	unsigned long nr = 0;

	if (!mutex_trylock(&tmon->mtx))
		return SHRINK_STOP;
	list_for_each_entry_safe(s, tmp, &tmon->samples, list) {
		if (nr >= sc->nr_to_scan)
			break;
		list_del(&s->list);
		tmon->n--;
		kref_put(&s->ref, sample_free);
		nr++;
	}
	mutex_unlock(&tmon->mtx);
	return nr;
}

struct shrinker tm_shrinker = {
	.count_objects = count_objects,
	.scan_objects = scan_objects,
	.seeks = DEFAULT_SEEKS,
};

static int __init tm_init(void)
{
	tmon = kmalloc(sizeof(struct task_monitor), GFP_KERNEL);
	if (!tmon)
		return -ENOMEM;
	tmon->pid = find_get_pid(target);
	if (!tmon->pid) {
		kfree(tmon);
		return -ESRCH;
	}
	INIT_LIST_HEAD(&tmon->samples);
	tmon->n = 0;
	mutex_init(&tmon->mtx);

	tmon_pool = mempool_create_kmalloc_pool(16, sizeof(struct task_sample));
	if (!tmon_pool) {
		put_pid(tmon->pid);
		kfree(tmon);
		return -ENOMEM;
	}
	register_shrinker(&tm_shrinker, "taskmonitor");
	if (sysfs_create_file(kernel_kobj, &tm_attr.attr))
		pr_warn("taskmonitor: no sysfs file\n");
	tmon_thread = kthread_run(monitor_fn, NULL, "monitor_fn");
	pr_info("taskmonitor: started on pid %d\n", target);
	return 0;
}

static void __exit tm_exit(void)
{
	struct task_sample *s, *tmp;

	kthread_stop(tmon_thread);
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
	unregister_shrinker(&tm_shrinker);
	list_for_each_entry_safe(s, tmp, &tmon->samples, list) {
		list_del(&s->list);
		kref_put(&s->ref, sample_free);
	}
	mempool_destroy(tmon_pool);
	put_pid(tmon->pid);
	kfree(tmon);
	pr_info("taskmonitor: stopped\n");
}

module_init(tm_init);
module_exit(tm_exit);
