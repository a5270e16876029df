/* Shared between the two compilation units of the "full" inspection test module. */
#ifndef TASKMONITOR_H
#define TASKMONITOR_H
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/pid.h>
#include <linux/types.h>

struct task_sample {
	struct list_head list;
	struct kref ref;
	u64 utime;
	u64 stime;
};

struct task_monitor {
	struct list_head samples;
	struct mutex lock;
	struct pid *pid;
	int nsamples;
};

extern struct task_monitor *tm;
void tm_sample_put(struct task_sample *s);
int tm_debugfs_init(void);
void tm_debugfs_exit(void);
#endif
