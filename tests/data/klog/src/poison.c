// SPDX-License-Identifier: GPL-2.0
/*
 * Test fixture: writes into a freed slab object, then allocates from the same cache again so
 * that SLUB (slub_debug=FZPU) checks the poison and reports "Poison overwritten".
 */
#include <linux/module.h>
#include <linux/slab.h>

static struct kmem_cache *cache;

static int __init poison_init(void)
{
	char *p, *q;

	cache = kmem_cache_create("grader_poison", 64, 0, 0, NULL);
	if (!cache)
		return -ENOMEM;
	p = kmem_cache_alloc(cache, GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	kmem_cache_free(cache, p);
	p[8] = 0x42;		/* use after free */
	q = kmem_cache_alloc(cache, GFP_KERNEL);
	if (q)
		kmem_cache_free(cache, q);
	return 0;
}

static void __exit poison_exit(void)
{
	kmem_cache_destroy(cache);
}
module_init(poison_init);
module_exit(poison_exit);
MODULE_LICENSE("GPL");
