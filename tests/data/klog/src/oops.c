// SPDX-License-Identifier: GPL-2.0
/* Test fixture: dereferences NULL at load, to record a real oops (then panic) console log. */
#include <linux/module.h>

static int *volatile nowhere;

static int __init oops_init(void)
{
	return *nowhere;
}
module_init(oops_init);
MODULE_LICENSE("GPL");
