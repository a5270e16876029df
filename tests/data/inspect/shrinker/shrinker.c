// SPDX-License-Identifier: GPL-2.0
/* Inspection test module: one shrinker, through whichever API the kernel offers. */
#include <linux/module.h>
#include <linux/shrinker.h>
#include <linux/version.h>

static unsigned long objects = 100;

static unsigned long sh_count(struct shrinker *s, struct shrink_control *sc)
{
	return objects ? objects : SHRINK_EMPTY;
}

static unsigned long sh_scan(struct shrinker *s, struct shrink_control *sc)
{
	unsigned long n = min(objects, sc->nr_to_scan);

	objects -= n;
	return n;
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 7, 0)
static struct shrinker *sh;

static int __init sh_init(void)
{
	sh = shrinker_alloc(0, "inspect-shrinker");
	if (!sh)
		return -ENOMEM;
	sh->count_objects = sh_count;
	sh->scan_objects = sh_scan;
	shrinker_register(sh);
	return 0;
}

static void __exit sh_exit(void)
{
	shrinker_free(sh);
}
#else
static struct shrinker sh = {
	.count_objects = sh_count,
	.scan_objects = sh_scan,
	.seeks = DEFAULT_SEEKS,
};

static int __init sh_init(void)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 0, 0)
	return register_shrinker(&sh, "inspect-shrinker");
#else
	return register_shrinker(&sh);
#endif
}

static void __exit sh_exit(void)
{
	unregister_shrinker(&sh);
}
#endif

module_init(sh_init);
module_exit(sh_exit);
MODULE_LICENSE("GPL");
