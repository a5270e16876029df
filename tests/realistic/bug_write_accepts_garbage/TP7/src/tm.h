#ifndef _TM_H_
#define _TM_H_

#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/kref.h>
#include <linux/pid.h>

struct task_sample {
	struct list_head list;
	struct kref kref;
	unsigned long long utime;	/* ms */
	unsigned long long stime;	/* ms */
};

struct task_monitor {
	struct list_head list;
	struct pid *pid;
	struct list_head samples;
	int nb_samples;
	struct mutex lock;
};

extern struct list_head tm_list;
extern struct mutex tm_list_lock;

void tm_sample_put(struct task_sample *s);
int tm_monitor_add(pid_t pid);
int tm_monitor_del(pid_t pid);

int tm_debugfs_create(void);
void tm_debugfs_remove(void);

#endif
