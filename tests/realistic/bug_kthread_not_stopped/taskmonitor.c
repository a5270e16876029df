#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>
#include <linux/pid.h>
#include <linux/slab.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/mm.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Theo Brunet");
MODULE_DESCRIPTION("TP7 taskmonitor, ex 1-3");

static int target;
module_param(target, int, 0444);

struct task_sample {
	struct list_head list;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct pid *pid;
	struct list_head samples;
	int count;
	struct mutex lock;
};

static struct task_monitor tmon;
static struct task_struct *monitor;
static struct kmem_cache *samples_cache;

static void save_sample(void)
{
	struct task_struct *t;
	struct task_sample *s;

	t = get_pid_task(tmon.pid, PIDTYPE_PID);
	if (!t)
		return;
	s = kmem_cache_alloc(samples_cache, GFP_KERNEL);
	if (s) {
		task_cputime_adjusted(t, &s->utime, &s->stime);
		mutex_lock(&tmon.lock);
		list_add_tail(&s->list, &tmon.samples);
		tmon.count++;
		mutex_unlock(&tmon.lock);
	}
	put_task_struct(t);
}

static int monitor_fn(void *arg)
{
	while (!kthread_should_stop()) {
		save_sample();
		msleep(1000);
	}
	return 0;
}

static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_sample *s;
	int n = 0, skip;
	ssize_t len = 0;

	mutex_lock(&tmon.lock);
	skip = tmon.count - (int)(PAGE_SIZE / 64);
	list_for_each_entry(s, &tmon.samples, list) {
		if (n++ < skip)
			continue;
		len += scnprintf(buf + len, PAGE_SIZE - len,
				 "pid %d usr %llu sys %llu\n", pid_nr(tmon.pid),
				 s->utime, s->stime);
	}
	mutex_unlock(&tmon.lock);
	return len;
}

static struct kobj_attribute tm_attribute = __ATTR_RO(taskmonitor);

static unsigned long count_samples(struct shrinker *sh, struct shrink_control *sc)
{
	return tmon.count;
}

static unsigned long free_samples(struct shrinker *sh, struct shrink_control *sc)
{
	struct task_sample *s;
	unsigned long i;

	if (!mutex_trylock(&tmon.lock))
		return SHRINK_STOP;
	for (i = 0; i < sc->nr_to_scan && !list_empty(&tmon.samples); i++) {
		s = list_first_entry(&tmon.samples, struct task_sample, list);
		list_del(&s->list);
		kmem_cache_free(samples_cache, s);
		tmon.count--;
	}
	mutex_unlock(&tmon.lock);
	return i;
}

static struct shrinker samples_shrinker = {
	.count_objects = count_samples,
	.scan_objects = free_samples,
	.seeks = DEFAULT_SEEKS,
};

static int __init taskmonitor_init(void)
{
	int ret;

	tmon.pid = find_get_pid(target);
	if (!tmon.pid)
		return -ESRCH;
	INIT_LIST_HEAD(&tmon.samples);
	mutex_init(&tmon.lock);
	tmon.count = 0;

	samples_cache = KMEM_CACHE(task_sample, 0);
	if (!samples_cache) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = register_shrinker(&samples_shrinker, "taskmonitor");
	if (ret)
		goto fail_cache;
	ret = sysfs_create_file(kernel_kobj, &tm_attribute.attr);
	if (ret)
		goto fail_shrinker;

	monitor = kthread_create(monitor_fn, NULL, "taskmonitor");
	if (IS_ERR(monitor)) {
		ret = PTR_ERR(monitor);
		goto fail_sysfs;
	}
	wake_up_process(monitor);
	return 0;

fail_sysfs:
	sysfs_remove_file(kernel_kobj, &tm_attribute.attr);
fail_shrinker:
	unregister_shrinker(&samples_shrinker);
fail_cache:
	kmem_cache_destroy(samples_cache);
fail:
	put_pid(tmon.pid);
	return ret;
}

static void __exit taskmonitor_exit(void)
{
	struct task_sample *s, *tmp;

	sysfs_remove_file(kernel_kobj, &tm_attribute.attr);
	unregister_shrinker(&samples_shrinker);
	mutex_lock(&tmon.lock);
	list_for_each_entry_safe(s, tmp, &tmon.samples, list) {
		list_del(&s->list);
		kmem_cache_free(samples_cache, s);
	}
	tmon.count = 0;
	mutex_unlock(&tmon.lock);
	kmem_cache_destroy(samples_cache);
	put_pid(tmon.pid);
	pr_info("taskmonitor: bye\n");
}

module_init(taskmonitor_init);
module_exit(taskmonitor_exit);
