// SPDX-License-Identifier: GPL-2.0
/* Inspection test module: kref, a KMEM_CACHE() never destroyed, a debugfs file, a parameter. */
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/kref.h>
#include <linux/module.h>
#include <linux/slab.h>

struct leaky_sample {
	struct kref ref;
	u64 utime;
};

static int target = 1;
module_param(target, int, 0444);
MODULE_PARM_DESC(target, "PID of the process to monitor");

static struct kmem_cache *cache;
static struct leaky_sample *sample;
static struct dentry *file;

static void leaky_release(struct kref *ref)
{
	kmem_cache_free(cache, container_of(ref, struct leaky_sample, ref));
}

static ssize_t leaky_read(struct file *f, char __user *buf, size_t len, loff_t *ppos)
{
	kref_get(&sample->ref);
	kref_put(&sample->ref, leaky_release);
	return 0;
}

static const struct file_operations leaky_fops = {
	.owner = THIS_MODULE,
	.read = leaky_read,
};

static int __init leaky_init(void)
{
	cache = KMEM_CACHE(leaky_sample, 0);
	if (!cache)
		return -ENOMEM;
	sample = kmem_cache_alloc(cache, GFP_KERNEL);
	if (!sample)
		return -ENOMEM;
	kref_init(&sample->ref);
	file = debugfs_create_file("leaky", 0444, NULL, NULL, &leaky_fops);
	return 0;
}

static void __exit leaky_exit(void)
{
	debugfs_remove(file);
	kref_put(&sample->ref, leaky_release);
	/* the bug under test: no kmem_cache_destroy(cache) */
}

module_init(leaky_init);
module_exit(leaky_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("grader test suite");
MODULE_DESCRIPTION("Inspection test module: a slab cache left behind");
