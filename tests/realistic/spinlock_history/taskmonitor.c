// TP7 - exercice 1 et 2
// Binome : Lea M. / Hugo T.
// On protege l'historique avec un spinlock (plus rapide qu'un mutex d'apres le cours de PNL 5).
#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/kobject.h>
#include <linux/kthread.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/pid.h>
#include <linux/sched.h>
#include <linux/sched/cputime.h>
#include <linux/sched/task.h>
#include <linux/shrinker.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/sysfs.h>
#include <linux/delay.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Lea M., Hugo T.");

static int target;
module_param(target, int, 0);

struct task_sample {
	struct list_head list;
	u64 utime;
	u64 stime;
};

static struct {
	struct pid *pid;
	struct list_head samples;
	unsigned long count;
	spinlock_t lock;
} mon;

static struct task_struct *worker;

static void take_sample(void)
{
	struct task_struct *t = get_pid_task(mon.pid, PIDTYPE_PID);
	struct task_sample *s;
	unsigned long flags;

	if (!t)
		return;
	s = kmalloc(sizeof(*s), GFP_KERNEL);
	if (s) {
		task_cputime_adjusted(t, &s->utime, &s->stime);
		spin_lock_irqsave(&mon.lock, flags);
		list_add_tail(&s->list, &mon.samples);
		mon.count++;
		spin_unlock_irqrestore(&mon.lock, flags);
	}
	put_task_struct(t);
}

static int worker_fn(void *arg)
{
	while (!kthread_should_stop()) {
		take_sample();
		msleep_interruptible(1000);
	}
	return 0;
}

/* newest lines last; we keep only what fits in the page */
static ssize_t taskmonitor_show(struct kobject *k, struct kobj_attribute *a, char *buf)
{
	struct task_sample *s, *from = NULL;
	unsigned long flags;
	int len = 0, need = 0, l;

	spin_lock_irqsave(&mon.lock, flags);
	list_for_each_entry_reverse(s, &mon.samples, list) {
		l = snprintf(NULL, 0, "pid %d usr %llu sys %llu\n", pid_nr(mon.pid), s->utime, s->stime);
		if (need + l >= PAGE_SIZE)
			break;
		need += l;
		from = s;
	}
	if (from) {
		s = from;
		list_for_each_entry_from(s, &mon.samples, list)
			len += scnprintf(buf + len, PAGE_SIZE - len, "pid %d usr %llu sys %llu\n",
					 pid_nr(mon.pid), s->utime, s->stime);
	}
	spin_unlock_irqrestore(&mon.lock, flags);
	return len;
}

static struct kobj_attribute tm_attr = __ATTR(taskmonitor, 0444, taskmonitor_show, NULL);

static unsigned long tm_count(struct shrinker *sh, struct shrink_control *sc)
{
	return mon.count ? mon.count : SHRINK_EMPTY;
}

static unsigned long tm_scan(struct shrinker *sh, struct shrink_control *sc)
{
	struct task_sample *s, *n;
	unsigned long flags, done = 0;
	LIST_HEAD(victims);

	spin_lock_irqsave(&mon.lock, flags);
	list_for_each_entry_safe(s, n, &mon.samples, list) {
		if (done >= sc->nr_to_scan)
			break;
		list_move(&s->list, &victims);
		mon.count--;
		done++;
	}
	spin_unlock_irqrestore(&mon.lock, flags);
	list_for_each_entry_safe(s, n, &victims, list)
		kfree(s);
	return done;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count,
	.scan_objects = tm_scan,
	.seeks = DEFAULT_SEEKS,
};

static void free_all(void)
{
	struct task_sample *s, *n;

	list_for_each_entry_safe(s, n, &mon.samples, list) {
		list_del(&s->list);
		kfree(s);
	}
	mon.count = 0;
}

static int __init tm_init(void)
{
	int ret;

	spin_lock_init(&mon.lock);
	INIT_LIST_HEAD(&mon.samples);
	mon.pid = find_get_pid(target);
	if (!mon.pid)
		return -ESRCH;
	worker = kthread_run(worker_fn, NULL, "taskmonitor");
	if (IS_ERR(worker)) {
		ret = PTR_ERR(worker);
		goto out_pid;
	}
	ret = register_shrinker(&tm_shrinker, "taskmonitor");
	if (ret)
		goto out_thread;
	ret = sysfs_create_file(kernel_kobj, &tm_attr.attr);
	if (ret)
		goto out_shrinker;
	return 0;

out_shrinker:
	unregister_shrinker(&tm_shrinker);
out_thread:
	kthread_stop(worker);
	free_all();
out_pid:
	put_pid(mon.pid);
	return ret;
}

static void __exit tm_exit(void)
{
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
	unregister_shrinker(&tm_shrinker);
	kthread_stop(worker);
	free_all();
	put_pid(mon.pid);
}

module_init(tm_init);
module_exit(tm_exit);
