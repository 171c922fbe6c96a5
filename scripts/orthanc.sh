#!/usr/bin/env bash
# A local Orthanc PACS with DICOMweb (QIDO-RS, WADO-RS, STOW-RS at /dicom-web/) on a folder of its own, for tests and
# for trying the hospital path (a MONAI Label reading studies over DICOMweb) on one machine. scripts/setup_orthanc.sh
# installs Orthanc and the plugin.
#
#   bash scripts/orthanc.sh start  --storage DIR [--http_port 8042] [--dicom_port 4242]
#   bash scripts/orthanc.sh stop   --storage DIR
#   bash scripts/orthanc.sh status --storage DIR
#
# DIR (created if absent) holds everything: orthanc.json (the generated configuration), storage/ (DICOM files and the
# SQLite index), orthanc.log, orthanc.pid, url (the HTTP root), credentials ("user:password", mode 0600; generated on
# the first start, kept afterwards).
#
# Who can reach it: Orthanc 1.10 has no option for the HTTP bind address (it listens on every interface), so
# "RemoteAccessAllowed": false answers only loopback clients and refuses all others; every request also needs the
# generated user and password (HTTP basic authentication), so other local users cannot read the studies either.
# The DICOM port (DIMSE) also listens on every interface (no bind option either): every association is refused,
# since no modality is registered and the "DicomAlwaysAllow*" options are off; --dicom_port 0 turns it off.
# Register a modality through the REST API (PUT /modalities/NAME) to let it send studies by C-STORE.
# Environment: ORTHANC (the binary), ORTHANC_DICOMWEB_PLUGIN (the .so), ORTHANC_START_TIMEOUT (seconds, default 30).
set -euo pipefail
die() { echo "orthanc.sh: $*" >&2; exit 2; }
usage="usage: bash scripts/orthanc.sh start|stop|status --storage DIR [--http_port 8042] [--dicom_port 4242]"

[ $# -ge 1 ] || die "$usage"
command="$1"
shift
case "$command" in
    start|stop|status) ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) die "unknown command '$command'; $usage" ;;
esac
storage="" http_port="8042" dicom_port="4242"
while [ $# -gt 0 ]; do
    case "$1" in
        --storage|--http_port|--dicom_port)
            [ $# -ge 2 ] || die "$1 needs a value"
            declare "${1#--}=$2"
            shift 2
            ;;
        --storage=*|--http_port=*|--dicom_port=*) name="${1%%=*}"; declare "${name#--}=${1#*=}"; shift ;;
        *) die "unknown option '$1'; $usage" ;;
    esac
done
[ -n "$storage" ] || die "--storage DIR is required; $usage"
for port_name in http_port dicom_port; do
    value="${!port_name}"
    [[ "$value" =~ ^[0-9]{1,5}$ ]] && [ "$value" -le 65535 ] || die "--$port_name takes a port number; got '$value'"
done
http_port=$((10#$http_port)) dicom_port=$((10#$dicom_port))  # no leading zeros in the JSON
[ "$http_port" -ge 1 ] || die "--http_port must be 1..65535; got '$http_port'"
[ "$http_port" != "$dicom_port" ] || die "--http_port and --dicom_port are both $http_port"
timeout_s="${ORTHANC_START_TIMEOUT:-30}"
[[ "$timeout_s" =~ ^[0-9]+$ ]] || die "ORTHANC_START_TIMEOUT takes seconds; got '$timeout_s'"

# the storage folder: a directory this user can write (created when absent, for start only)
if [ -e "$storage" ] && [ ! -d "$storage" ]; then
    die "--storage '$storage' exists and is not a directory"
fi
if [ ! -d "$storage" ]; then
    [ "$command" = start ] || die "--storage '$storage' does not exist (nothing was started there)"
    mkdir -p -- "$storage" 2>/dev/null || die "--storage '$storage' cannot be created"
fi
storage="$(cd -- "$storage" && pwd -P)"
probe="$(mktemp -p "$storage" .orthanc-write-test.XXXXXX 2>/dev/null)" \
    || die "--storage '$storage' is not a directory this user ($(id -un)) can write"
rm -f -- "$probe"
case "$storage" in
    *[\"\\]*|*[[:cntrl:]]*) die "--storage '$storage': a path with quotes, backslashes or control characters cannot go into Orthanc's JSON configuration" ;;
esac
config="$storage/orthanc.json" pid_file="$storage/orthanc.pid" log="$storage/orthanc.log"
credentials="$storage/credentials" url_file="$storage/url"

running_pid() {  # the pid of the Orthanc started on this folder, if it still runs
    local pid args
    pid="$(cat "$pid_file" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    args="$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null)" || return 1
    grep -qxF -- "$config" <<< "$args" || return 1
    echo "$pid"
}

answers() {  # GET /system answers (with the credentials) on the url of this folder
    local url
    url="$(cat "$url_file")"
    curl -sf --max-time 2 -o /dev/null --config - <<< "user = \"$(cat "$credentials")\"
url = \"${url}system\""
}

stop_orthanc() {
    local pid
    if ! pid="$(running_pid)"; then
        rm -f -- "$pid_file"
        echo "orthanc.sh: not running on $storage"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((timeout_s * 5))); do
        [ -e "/proc/$pid" ] || break
        sleep 0.2
    done
    if [ -e "/proc/$pid" ]; then
        echo "orthanc.sh: Orthanc (pid $pid) did not stop within ${timeout_s} s: killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f -- "$pid_file"
    echo "orthanc.sh: stopped Orthanc (pid $pid) on $storage"
}

status_orthanc() {
    local pid
    if ! pid="$(running_pid)"; then
        echo "orthanc.sh: not running on $storage"
        return 3
    fi
    if answers; then
        echo "orthanc.sh: running (pid $pid) at $(cat "$url_file"), DICOMweb $(cat "$url_file")dicom-web/, credentials in $credentials"
        return 0
    fi
    echo "orthanc.sh: Orthanc (pid $pid) runs but does not answer at $(cat "$url_file")system; see $log" >&2
    return 1
}

port_in_use() { (exec 3<> "/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_credentials() {  # user:password, generated once per folder, 0600
    [ -s "$credentials" ] && return 0
    local password
    password="$(head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)"
    (umask 077 && printf 'pacs:%s\n' "$password" > "$credentials.tmp" && mv -f -- "$credentials.tmp" "$credentials")
}

write_config() {
    local user password dicom_enabled=true json_dicom_port="$dicom_port" plugin="$1"
    user="$(cut -d: -f1 < "$credentials")" password="$(cut -d: -f2- < "$credentials")"
    [ "$dicom_port" != 0 ] || dicom_enabled=false json_dicom_port=4242
    (umask 077 && cat > "$config.tmp" << EOF
{
    "Name": "mae-medical-bundles local PACS",
    "StorageDirectory": "$storage/storage",
    "IndexDirectory": "$storage/storage",
    "Plugins": ["$plugin"],
    "HttpServerEnabled": true,
    "HttpPort": $http_port,
    "RemoteAccessAllowed": false,
    "AuthenticationEnabled": true,
    "RegisteredUsers": {"$user": "$password"},
    "SslEnabled": false,
    "WebDavEnabled": false,
    "ExecuteLuaEnabled": false,
    "RestApiWriteToFileSystemEnabled": false,
    "HttpDescribeErrors": true,
    "DicomServerEnabled": $dicom_enabled,
    "DicomPort": $json_dicom_port,
    "DicomAet": "ORTHANC",
    "DicomCheckCalledAet": true,
    "DicomAlwaysAllowEcho": false,
    "DicomAlwaysAllowStore": false,
    "DicomAlwaysAllowFind": false,
    "DicomAlwaysAllowFindWorklist": false,
    "DicomAlwaysAllowGet": false,
    "DicomAlwaysAllowMove": false,
    "DicomCheckModalityHost": true,
    "DicomModalities": {},
    "DicomModalitiesInDatabase": false,
    "OrthancPeers": {},
    "SaveJobs": false,
    "DicomWeb": {
        "Enable": true,
        "Root": "/dicom-web/",
        "EnableWado": true,
        "WadoRoot": "/wado",
        "Ssl": false,
        "StudiesMetadata": "Full",
        "SeriesMetadata": "Full"
    }
}
EOF
    mv -f -- "$config.tmp" "$config")
}

find_plugin() {
    local candidate
    for candidate in "${ORTHANC_DICOMWEB_PLUGIN:-}" /usr/share/orthanc/plugins/libOrthancDicomWeb.so \
        /usr/lib/orthanc/libOrthancDicomWeb.so* /usr/local/share/orthanc/plugins/libOrthancDicomWeb.so; do
        [ -n "$candidate" ] && [ -f "$candidate" ] && { echo "$candidate"; return 0; }
    done
    return 1
}

start_orthanc() {
    local binary plugin pid
    if pid="$(running_pid)"; then
        echo "orthanc.sh: already running (pid $pid) on $storage at $(cat "$url_file")"
        return 0
    fi
    binary="${ORTHANC:-$(command -v Orthanc || echo /usr/sbin/Orthanc)}"
    [ -x "$binary" ] || die "Orthanc not found (looked for '$binary'): run bash scripts/setup_orthanc.sh"
    plugin="$(find_plugin)" || die "the DICOMweb plugin (libOrthancDicomWeb.so) not found: run bash scripts/setup_orthanc.sh"
    command -v curl > /dev/null || die "curl is needed to check that Orthanc answers"
    port_in_use "$http_port" && die "port $http_port (--http_port) is already in use on 127.0.0.1"
    [ "$dicom_port" = 0 ] || ! port_in_use "$dicom_port" || die "port $dicom_port (--dicom_port) is already in use"
    mkdir -p -- "$storage/storage"
    write_credentials
    write_config "$plugin"
    echo "http://127.0.0.1:$http_port/" > "$url_file"
    (umask 077 && : >> "$log")
    echo "--- $(date -Is) orthanc.sh start: $binary $config" >> "$log"
    # its own session (no hang-up or Ctrl-C of the caller's terminal reaches it); a background job of this
    # non-interactive script leads no process group, so setsid does not fork and $! is Orthanc's pid
    setsid "$binary" "$config" >> "$log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$pid_file"
    for _ in $(seq 1 $((timeout_s * 5))); do
        if [ ! -e "/proc/$pid" ]; then
            rm -f -- "$pid_file"
            echo "orthanc.sh: Orthanc exited while starting; the end of $log:" >&2
            tail -n 20 -- "$log" >&2
            exit 1
        fi
        if answers; then
            echo "orthanc.sh: started Orthanc (pid $pid) at http://127.0.0.1:$http_port/, DICOMweb http://127.0.0.1:$http_port/dicom-web/, credentials in $credentials, log $log"
            return 0
        fi
        sleep 0.2
    done
    echo "orthanc.sh: Orthanc (pid $pid) did not answer GET /system within ${timeout_s} s; stopping it. See $log" >&2
    stop_orthanc > /dev/null
    exit 1
}

case "$command" in
    start) start_orthanc ;;
    stop) stop_orthanc ;;
    status) status_orthanc ;;
esac
