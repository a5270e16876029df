#include <linux/kernel.h>
#include <linux/debugfs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>

#include "tm.h"

static struct dentry *dir_entry;

static int tm_show(struct seq_file *m, void *v)
{
	struct task_monitor *tm;
	struct task_sample *s;

	mutex_lock(&tm_list_lock);
	list_for_each_entry(tm, &tm_list, list) {
		mutex_lock(&tm->lock);
		list_for_each_entry(s, &tm->samples, list)
			seq_printf(m, "pid %d usr %llu sys %llu\n",
				   pid_nr(tm->pid), s->utime, s->stime);
		mutex_unlock(&tm->lock);
	}
	mutex_unlock(&tm_list_lock);
	return 0;
}

static int tm_open(struct inode *inode, struct file *file)
{
	return single_open(file, tm_show, NULL);
}

/* "123" starts monitoring pid 123, "-123" stops it */
static ssize_t tm_write(struct file *file, const char __user *ubuf,
			size_t count, loff_t *ppos)
{
	char buf[16];
	long pid;
	int ret = 0;

	if (count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';

	pid = simple_strtol(buf, NULL, 10);
	if (pid > 0)
		ret = tm_monitor_add(pid);
	else if (pid < 0)
		ret = tm_monitor_del(-pid);
	/* 0: nothing to do */
	if (ret)
		return ret;
	return count;
}

static const struct file_operations tm_fops = {
	.owner = THIS_MODULE,
	.open = tm_open,
	.read = seq_read,
	.write = tm_write,
	.llseek = seq_lseek,
	.release = single_release,
};

int tm_debugfs_create(void)
{
	dir_entry = debugfs_create_file("taskmonitor", 0666 & ~0022, NULL, NULL,
					&tm_fops);
	return 0;
}

void tm_debugfs_remove(void)
{
	debugfs_remove(dir_entry);
}
