// SPDX-License-Identifier: GPL-2.0
#include <linux/kernel.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>

#include "taskmonitor.h"

static struct dentry *tm_dentry;

/* the sample at position n over all the tasks, or NULL; tm_lock held */
static struct task_sample *tm_nth(loff_t n)
{
	struct task_monitor *m;
	struct task_sample *s;

	list_for_each_entry(m, &tm_monitors, node) {
		if (n >= m->nb) {
			n -= m->nb;
			continue;
		}
		list_for_each_entry(s, &m->samples, list)
			if (n-- == 0)
				return s;
	}
	return NULL;
}

static void *dbg_start(struct seq_file *sf, loff_t *pos)
{
	mutex_lock(&tm_lock);
	return tm_nth(*pos);
}

static void *dbg_next(struct seq_file *sf, void *v, loff_t *pos)
{
	struct task_sample *s = v;
	struct task_monitor *m = s->owner;

	++*pos;
	if (!list_is_last(&s->list, &m->samples))
		return list_next_entry(s, list);
	/* first sample of the next task that has one */
	list_for_each_entry_continue(m, &tm_monitors, node)
		if (!list_empty(&m->samples))
			return list_first_entry(&m->samples, struct task_sample, list);
	return NULL;
}

static void dbg_stop(struct seq_file *sf, void *v)
{
	mutex_unlock(&tm_lock);
}

static int dbg_show(struct seq_file *sf, void *v)
{
	struct task_sample *s = v;

	seq_printf(sf, TM_FMT, s->owner->nr, s->utime, s->stime);
	return 0;
}

static const struct seq_operations dbg_seq_ops = {
	.start	= dbg_start,
	.next	= dbg_next,
	.stop	= dbg_stop,
	.show	= dbg_show,
};

static int tm_open(struct inode *inode, struct file *file)
{
	return seq_open(file, &dbg_seq_ops);
}

static ssize_t tm_write(struct file *file, const char __user *buf,
			size_t count, loff_t *ppos)
{
	int nr, err;

	err = kstrtoint_from_user(buf, count, 10, &nr);
	if (err)
		return err;
	if (nr == 0 || nr == INT_MIN)
		return -EINVAL;
	err = nr > 0 ? tm_add(nr) : tm_remove(-nr);
	return err ? err : count;
}

static const struct file_operations tm_fops = {
	.owner		= THIS_MODULE,
	.open		= tm_open,
	.read		= seq_read,
	.write		= tm_write,
	.llseek		= seq_lseek,
	.release	= seq_release,
};

int tm_debugfs_init(void)
{
	tm_dentry = debugfs_create_file(TM_NAME, 0644, NULL, NULL, &tm_fops);
	return IS_ERR(tm_dentry) ? PTR_ERR(tm_dentry) : 0;
}

void tm_debugfs_exit(void)
{
	debugfs_remove(tm_dentry);
}
