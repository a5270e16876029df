// SPDX-License-Identifier: GPL-2.0
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/slab.h>
#include <linux/sched.h>
#include <linux/sched/task.h>
#include <linux/sched/cputime.h>

#include "taskmonitor.h"

static struct task_struct *tm_thread;
static struct kmem_cache *tm_cache;
mempool_t *tm_pool;

static void tm_release(struct kref *k)
{
	struct task_sample *s = container_of(k, struct task_sample, refs);

	mempool_free(s, tm_pool);
}

void tm_sample_get(struct task_sample *s)
{
	kref_get(&s->refs);
}

void tm_sample_put(struct task_sample *s)
{
	kref_put(&s->refs, tm_release);
}

/* unlink a sample from its task's list; tm_lock held */
void tm_drop_sample(struct task_sample *s)
{
	list_del(&s->list);
	s->owner->nb--;
	atomic_long_dec(&tm_total);
	tm_sample_put(s);
}

/* tm_lock held */
void tm_drop_all(struct task_monitor *m)
{
	struct task_sample *s, *tmp;

	list_for_each_entry_safe(s, tmp, &m->samples, list)
		tm_drop_sample(s);
}

/* returns the new sample with one reference for the caller, or NULL */
static struct task_sample *save_sample(struct task_monitor *m)
{
	struct task_struct *task;
	struct task_sample *s;

	task = get_pid_task(m->pid, PIDTYPE_PID);
	if (!task)
		return NULL;	/* exited: nothing to sample */
	s = mempool_alloc(tm_pool, GFP_KERNEL);
	if (!s) {
		put_task_struct(task);
		return NULL;
	}
	task_cputime_adjusted(task, &s->utime, &s->stime);
	put_task_struct(task);

	kref_init(&s->refs);
	s->owner = m;
	list_add_tail(&s->list, &m->samples);
	m->nb++;
	atomic_long_inc(&tm_total);
	tm_sample_get(s);
	return s;
}

static int tm_sampler(void *unused)
{
	struct task_monitor *m;
	struct task_sample *s;

	while (!kthread_should_stop()) {
		mutex_lock(&tm_lock);
		list_for_each_entry(m, &tm_monitors, node) {
			s = save_sample(m);
			if (s)
				tm_sample_put(s);
		}
		mutex_unlock(&tm_lock);
		msleep(1000);
	}
	return 0;
}

int tm_sampler_start(void)
{
	tm_cache = kmem_cache_create("tm_cache", sizeof(struct task_sample),
				     0, SLAB_HWCACHE_ALIGN, NULL);
	if (!tm_cache)
		return -ENOMEM;
	tm_pool = mempool_create_slab_pool(8, tm_cache);
	if (!tm_pool) {
		kmem_cache_destroy(tm_cache);
		return -ENOMEM;
	}
	tm_thread = kthread_run(tm_sampler, NULL, "tm_sampler");
	if (IS_ERR(tm_thread)) {
		mempool_destroy(tm_pool);
		kmem_cache_destroy(tm_cache);
		return PTR_ERR(tm_thread);
	}
	return 0;
}

void tm_sampler_stop(void)
{
	kthread_stop(tm_thread);
	mempool_destroy(tm_pool);
	kmem_cache_destroy(tm_cache);
}
