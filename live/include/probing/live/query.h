// Live SQL: the ring tables straight from a process's rings (no round trip: it answers while
// the process is hung or dead), plus the tables only the process can give (python.backtrace,
// information_schema.df_settings, its @probing.table tables), fetched over the control socket
// only when the query names them.
//
//   PROBING_ASSIGN_OR_RETURN(auto r, LiveQuery(client, "/dev/shm/probing-0/4242", sql));
#pragma once

#include <string>

#include "probing/analyzer/sql.h"
#include "probing/live/control_client.h"

namespace probing::live {

// A JSON value from the control server as an SQL value (booleans as 0/1, objects as JSON text).
analyzer::SqlValue JsonToValue(const nlohmann::json& v);

Result<analyzer::QueryResult> LiveQuery(ControlClient& client, const std::string& ring_dir,
                                        const std::string& sql);

}  // namespace probing::live
