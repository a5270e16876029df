// SPDX-License-Identifier: GPL-2.0
/* Hostile: module_init takes every page it can get and keeps them while loaded. */
#include <linux/gfp.h>
#include <linux/list.h>
#include <linux/mm.h>
#include <linux/module.h>

static int target;
module_param(target, int, 0444);

static LIST_HEAD(hoard);
static unsigned long hoarded;

static int __init tm_init(void)
{
	struct page *page;

	/* No __GFP_NORETRY: the allocator reclaims, then the OOM killer runs, until nothing is left. */
	while ((page = alloc_page(GFP_KERNEL | __GFP_NOWARN))) {
		list_add(&page->lru, &hoard);
		hoarded++;
	}
	pr_info("taskmonitor: hoarding %lu pages\n", hoarded);
	return 0;
}

static void __exit tm_exit(void)
{
	struct page *page, *next;

	list_for_each_entry_safe(page, next, &hoard, lru) {
		list_del(&page->lru);
		__free_page(page);
	}
}

module_init(tm_init);
module_exit(tm_exit);
MODULE_LICENSE("GPL");
