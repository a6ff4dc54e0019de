/* cryo's JSON, written and read through json-c: the supervisor's replies and
 * status.json, and every --json output of the CLI. A reader looks keys up in
 * a parsed object, so neither their order nor their nesting can fool it. */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

/* The one-line text of o (no '/' escaped), owned by o. */
const char *cryo_json_text(struct json_object *o);

/* A number of milliseconds, written with one decimal ("12.3"). */
struct json_object *cryo_json_ms(double ms);

/* Parses text as one JSON object; NULL if it is not one. json_object_put()
 * it when done. */
struct json_object *cryo_json_parse(const char *text);

/* A key's value in object o, or def when o has no such key of that type. */
bool cryo_json_bool(struct json_object *o, const char *key);
int64_t cryo_json_int(struct json_object *o, const char *key, int64_t def);
double cryo_json_double(struct json_object *o, const char *key, double def);
/* A string value (owned by o), or NULL. */
const char *cryo_json_str(struct json_object *o, const char *key);
/* An object value (owned by o), or NULL. */
struct json_object *cryo_json_obj(struct json_object *o, const char *key);

/* Adds key: value to object o; the value's reference goes to o. */
static inline void cryo_json_add(struct json_object *o, const char *key, struct json_object *v)
{
	json_object_object_add(o, key, v);
}

static inline void cryo_json_put(struct json_object **o)
{
	if (*o)
		json_object_put(*o);
}
#define _cleanup_json_ __attribute__((cleanup(cryo_json_put)))
