// SPDX-License-Identifier: GPL-2.0
/* Second compilation unit: the debugfs file, with seq_file and a write fop. */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/kernel.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>
#include "taskmonitor.h"

static struct dentry *tm_dentry;

static void *tm_seq_start(struct seq_file *m, loff_t *pos)
{
	mutex_lock(&tm->lock);
	return seq_list_start(&tm->samples, *pos);
}

static void *tm_seq_next(struct seq_file *m, void *v, loff_t *pos)
{
	return seq_list_next(v, &tm->samples, pos);
}

static void tm_seq_stop(struct seq_file *m, void *v)
{
	mutex_unlock(&tm->lock);
}

static int tm_seq_show(struct seq_file *m, void *v)
{
	struct task_sample *s = list_entry(v, struct task_sample, list);

	kref_get(&s->ref);
	seq_printf(m, "usr %llu sys %llu\n", s->utime, s->stime);
	/* still under tm->lock: this is never the last reference */
	tm_sample_put(s);
	return 0;
}

static const struct seq_operations tm_seq_ops = {
	.start = tm_seq_start,
	.next = tm_seq_next,
	.stop = tm_seq_stop,
	.show = tm_seq_show,
};

static int tm_open(struct inode *inode, struct file *file)
{
	return seq_open(file, &tm_seq_ops);
}

static ssize_t tm_write(struct file *file, const char __user *buf, size_t len, loff_t *ppos)
{
	int pid, err;

	err = kstrtoint_from_user(buf, len, 10, &pid);
	if (err)
		return err;
	pr_info("taskmonitor: asked for %d\n", pid);
	return len;
}

static const struct file_operations tm_fops = {
	.owner = THIS_MODULE,
	.open = tm_open,
	.read = seq_read,
	.write = tm_write,
	.llseek = seq_lseek,
	.release = seq_release,
};

/* Used only in this compilation unit: the inspection must read every unit's DWARF. */
static inline int tm_dentry_error(struct dentry *d)
{
	return IS_ERR(d) ? PTR_ERR(d) : 0;
}

int tm_debugfs_init(void)
{
	tm_dentry = debugfs_create_file("taskmonitor", 0644, NULL, NULL, &tm_fops);
	return tm_dentry_error(tm_dentry);
}

void tm_debugfs_exit(void)
{
	debugfs_remove(tm_dentry);
}
