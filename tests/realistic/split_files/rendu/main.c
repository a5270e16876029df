// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/slab.h>
#include <linux/kobject.h>
#include <linux/sysfs.h>

#include "taskmonitor.h"

MODULE_LICENSE("GPL");
MODULE_AUTHOR("Yanis Belkacem <yanis.belkacem@etu.example.fr>");
MODULE_DESCRIPTION("PNL TP7: monitoring of processes");

static int target;
module_param(target, int, 0444);
MODULE_PARM_DESC(target, "pid of the process to monitor");

/* exercise 7 question 1: a second process from the command line */
static int target2;
module_param(target2, int, 0444);
MODULE_PARM_DESC(target2, "pid of a second process to monitor (optional)");

LIST_HEAD(tm_monitors);
DEFINE_MUTEX(tm_lock);
atomic_long_t tm_total = ATOMIC_LONG_INIT(0);

static struct task_monitor *tm_find(pid_t nr)
{
	struct task_monitor *m;

	list_for_each_entry(m, &tm_monitors, node)
		if (m->nr == nr)
			return m;
	return NULL;
}

int tm_add(pid_t nr)
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
	m->nr = nr;
	INIT_LIST_HEAD(&m->samples);

	mutex_lock(&tm_lock);
	if (tm_find(nr)) {
		mutex_unlock(&tm_lock);
		put_pid(pid);
		kfree(m);
		return -EEXIST;
	}
	list_add_tail(&m->node, &tm_monitors);
	mutex_unlock(&tm_lock);
	pr_info(TM_NAME ": monitoring %d\n", nr);
	return 0;
}

static void tm_free(struct task_monitor *m)
{
	tm_drop_all(m);
	put_pid(m->pid);
	kfree(m);
}

int tm_remove(pid_t nr)
{
	struct task_monitor *m;

	mutex_lock(&tm_lock);
	m = tm_find(nr);
	if (!m) {
		mutex_unlock(&tm_lock);
		return -ENOENT;
	}
	list_del(&m->node);
	tm_free(m);
	mutex_unlock(&tm_lock);
	pr_info(TM_NAME ": %d no longer monitored\n", nr);
	return 0;
}

/* sysfs: the newest samples of every task, at most one page */
static ssize_t taskmonitor_show(struct kobject *kobj,
				struct kobj_attribute *attr, char *buf)
{
	struct task_monitor *m;
	struct task_sample *s, *first;
	int len = 0, room, used, n;

	mutex_lock(&tm_lock);
	list_for_each_entry(m, &tm_monitors, node) {
		room = PAGE_SIZE - 1 - len;
		used = 0;
		first = NULL;
		list_for_each_entry_reverse(s, &m->samples, list) {
			n = snprintf(NULL, 0, TM_FMT, m->nr, s->utime, s->stime);
			if (used + n > room)
				break;
			used += n;
			first = s;
		}
		if (!first)
			continue;
		s = first;
		list_for_each_entry_from(s, &m->samples, list)
			len += sysfs_emit_at(buf, len, TM_FMT, m->nr,
					     s->utime, s->stime);
	}
	mutex_unlock(&tm_lock);
	return len;
}

static struct kobj_attribute tm_attr = __ATTR_RO(taskmonitor);

static void tm_remove_all(void)
{
	struct task_monitor *m, *tmp;

	mutex_lock(&tm_lock);
	list_for_each_entry_safe(m, tmp, &tm_monitors, node) {
		list_del(&m->node);
		tm_free(m);
	}
	mutex_unlock(&tm_lock);
}

static int __init tm_init(void)
{
	int err;

	err = tm_add(target);
	if (err) {
		pr_err(TM_NAME ": bad target %d\n", target);
		return err;
	}
	if (target2) {
		err = tm_add(target2);
		if (err)
			goto out_monitors;
	}

	err = tm_sampler_start();
	if (err)
		goto out_monitors;
	err = tm_shrinker_init();
	if (err)
		goto out_sampler;
	err = sysfs_create_file(kernel_kobj, &tm_attr.attr);
	if (err)
		goto out_shrinker;
	err = tm_debugfs_init();
	if (err)
		goto out_sysfs;
	return 0;

out_sysfs:
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
out_shrinker:
	tm_shrinker_exit();
out_sampler:
	tm_sampler_stop();
out_monitors:
	tm_remove_all();
	return err;
}

static void __exit tm_exit(void)
{
	tm_debugfs_exit();
	sysfs_remove_file(kernel_kobj, &tm_attr.attr);
	tm_shrinker_exit();
	tm_remove_all();
	tm_sampler_stop();
}

module_init(tm_init);
module_exit(tm_exit);
