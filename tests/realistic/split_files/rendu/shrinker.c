// SPDX-License-Identifier: GPL-2.0
#include <linux/kernel.h>
#include <linux/mm.h>

#include "taskmonitor.h"

static unsigned long tm_count(struct shrinker *sh, struct shrink_control *sc)
{
	long n = atomic_long_read(&tm_total);

	return n > 0 ? n : SHRINK_EMPTY;
}

/* frees the oldest samples, task after task */
static unsigned long tm_scan(struct shrinker *sh, struct shrink_control *sc)
{
	struct task_monitor *m;
	unsigned long freed = 0;

	if (!mutex_trylock(&tm_lock))
		return SHRINK_STOP;
	list_for_each_entry(m, &tm_monitors, node) {
		while (freed < sc->nr_to_scan && !list_empty(&m->samples)) {
			tm_drop_sample(list_first_entry(&m->samples,
							struct task_sample, list));
			freed++;
		}
	}
	mutex_unlock(&tm_lock);
	return freed;
}

static struct shrinker tm_shrinker = {
	.count_objects = tm_count,
	.scan_objects = tm_scan,
	.seeks = DEFAULT_SEEKS,
};

int tm_shrinker_init(void)
{
	return register_shrinker(&tm_shrinker, TM_NAME);
}

void tm_shrinker_exit(void)
{
	unregister_shrinker(&tm_shrinker);
}
