// SPDX-License-Identifier: GPL-2.0
/* Test fixture: a WARN_ON at load, to record a real "WARNING:" report. */
#include <linux/module.h>

static int __init warn_init(void)
{
	WARN_ON(1);
	return 0;
}
module_init(warn_init);
MODULE_LICENSE("GPL");
