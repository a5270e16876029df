/* Inspection test module without MODULE_LICENSE(): it may use only non-GPL exports
 * (kmalloc, kfree, printk), or modpost refuses it. */
#include <linux/module.h>
#include <linux/slab.h>

static char *buffer;

static int __init nolicense_init(void)
{
	buffer = kmalloc(64, GFP_KERNEL);
	if (!buffer)
		return -ENOMEM;
	pr_info("nolicense: loaded\n");
	return 0;
}

static void __exit nolicense_exit(void)
{
	kfree(buffer);
}

module_init(nolicense_init);
module_exit(nolicense_exit);
