#include "json.h"

#include <stdio.h>
#include <string.h>

const char *cryo_json_text(struct json_object *o)
{
	return json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
	                                             JSON_C_TO_STRING_NOSLASHESCAPE);
}

struct json_object *cryo_json_ms(double ms)
{
	char text[48];
	snprintf(text, sizeof(text), "%.1f", ms);
	return json_object_new_double_s(ms, text);
}

struct json_object *cryo_json_parse(const char *text)
{
	struct json_object *o = json_tokener_parse(text);
	if (o && !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return NULL;
	}
	return o;
}

static struct json_object *get(struct json_object *o, const char *key, enum json_type type)
{
	struct json_object *v = NULL;
	if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, type))
		return NULL;
	return v;
}

bool cryo_json_bool(struct json_object *o, const char *key)
{
	struct json_object *v = get(o, key, json_type_boolean);
	return v && json_object_get_boolean(v);
}

int64_t cryo_json_int(struct json_object *o, const char *key, int64_t def)
{
	struct json_object *v = get(o, key, json_type_int);
	return v ? json_object_get_int64(v) : def;
}

double cryo_json_double(struct json_object *o, const char *key, double def)
{
	struct json_object *v = get(o, key, json_type_double);
	if (!v)
		v = get(o, key, json_type_int);
	return v ? json_object_get_double(v) : def;
}

const char *cryo_json_str(struct json_object *o, const char *key)
{
	struct json_object *v = get(o, key, json_type_string);
	return v ? json_object_get_string(v) : NULL;
}

struct json_object *cryo_json_obj(struct json_object *o, const char *key)
{
	return get(o, key, json_type_object);
}
