/* SPDX-License-Identifier: GPL-2.0 */
/*
 * taskmonitor.h - shared declarations of the taskmonitor module
 *
 * main.c      module parameters, init/exit, list of monitored tasks, sysfs
 * sampler.c   the kthread and the samples
 * shrinker.c  gives samples back under memory pressure
 * dbgfs.c     /sys/kernel/debug/taskmonitor (seq_file + write)
 */
#ifndef TASKMONITOR_H
#define TASKMONITOR_H

#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/kref.h>
#include <linux/types.h>
#include <linux/pid.h>
#include <linux/mempool.h>
#include <linux/atomic.h>

#define TM_NAME "taskmonitor"
#define TM_FMT "pid %d usr %llu sys %llu\n"

struct task_monitor;

struct task_sample {
	struct list_head list;
	struct kref refs;
	struct task_monitor *owner;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct list_head node;		/* tm_monitors */
	struct pid *pid;
	pid_t nr;
	struct list_head samples;	/* oldest first */
	unsigned int nb;
};

/* main.c */
extern struct list_head tm_monitors;
extern struct mutex tm_lock;		/* protects tm_monitors and every sample list */
extern atomic_long_t tm_total;		/* number of samples, read by the shrinker */
int tm_add(pid_t nr);
int tm_remove(pid_t nr);

/* sampler.c */
extern mempool_t *tm_pool;
int tm_sampler_start(void);
void tm_sampler_stop(void);
void tm_sample_get(struct task_sample *s);
void tm_sample_put(struct task_sample *s);
void tm_drop_sample(struct task_sample *s);
void tm_drop_all(struct task_monitor *m);

/* shrinker.c */
int tm_shrinker_init(void);
void tm_shrinker_exit(void);

/* dbgfs.c */
int tm_debugfs_init(void);
void tm_debugfs_exit(void);

#endif
