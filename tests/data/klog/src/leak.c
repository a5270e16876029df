// SPDX-License-Identifier: GPL-2.0
/* Test fixture: destroys a slab cache that still holds an object ("still has objects"). */
#include <linux/module.h>
#include <linux/slab.h>

static struct kmem_cache *cache;
static void *obj;

static int __init leak_init(void)
{
	cache = kmem_cache_create("grader_leak", 64, 0, 0, NULL);
	if (!cache)
		return -ENOMEM;
	obj = kmem_cache_alloc(cache, GFP_KERNEL);
	return 0;
}

static void __exit leak_exit(void)
{
	kmem_cache_destroy(cache);
}
module_init(leak_init);
module_exit(leak_exit);
MODULE_LICENSE("GPL");
