#!/bin/sh
# Refuse to start the compose stack with secrets that are not secrets.
#
#   check-secrets.sh NAME [NAME...]
#
# Each NAME is an environment variable (the value is read from the environment, never from the
# command line, and never printed). Refused: a variable that is unset or empty, one that still
# holds a `change-me` placeholder of deploy/.env.example (any case), a password or secret
# (a name containing PASSWORD or SECRET) shorter than 12 characters, and an *AUTH_STRING that is
# not `user:password` with a password of at least 12 characters. Exit 0 when every NAME passes,
# 1 otherwise, with one line per problem on stderr.
#
# docker-compose.yml runs it as the one-shot `check-secrets`, which `postgres` and `minio` (and
# so everything else) wait for. Compose's own ${VAR:?} only refuses a variable that is missing.

set -u

MIN_LENGTH=12
problems=0

refuse() {
    printf 'check-secrets: %s\n' "$1" >&2
    problems=$((problems + 1))
}

check_length() { # NAME VALUE WHAT
    if [ "${#2}" -lt "$MIN_LENGTH" ]; then
        refuse "$1: the $3 has ${#2} characters; use at least $MIN_LENGTH (e.g. openssl rand -hex 24)"
        return 1
    fi
}

for name in "$@"; do
    case "$name" in
        '' | [0-9]* | *[!A-Za-z0-9_]*)
            refuse "not a variable name: '$name'"
            continue
            ;;
    esac
    eval "is_set=\${$name+set}"
    if [ -z "$is_set" ]; then
        refuse "$name is not set (deploy/.env)"
        continue
    fi
    eval "value=\${$name}"
    if [ -z "$value" ]; then
        refuse "$name is empty (deploy/.env)"
        continue
    fi
    lower=$(printf '%s' "$value" | tr 'A-Z' 'a-z')
    case "$lower" in
        *change-me* | *change_me* | *changeme*)
            refuse "$name still holds the placeholder of deploy/.env.example: replace it in deploy/.env"
            continue
            ;;
    esac
    case "$name" in
        *AUTH_STRING)
            user=${value%%:*}
            password=${value#*:}
            if [ "$user" = "$value" ] || [ -z "$user" ] || [ -z "$password" ]; then
                refuse "$name must be user:password (a user name, a colon, a password)"
                continue
            fi
            check_length "$name" "$password" "password part" || continue
            ;;
        *PASSWORD* | *SECRET*)
            check_length "$name" "$value" "value" || continue
            ;;
    esac
done

if [ "$problems" -gt 0 ]; then
    printf 'check-secrets: refusing to start: %s problem(s) in deploy/.env (values not shown)\n' \
        "$problems" >&2
    exit 1
fi
printf 'check-secrets: %s variables set, none a placeholder\n' "$#"
