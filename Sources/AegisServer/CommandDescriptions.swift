import AegisProtocol

/// What COMMAND INFO and COMMAND DOCS say about a command. Clients and
/// tools route by the key specs and ACL categories (redis-py's cluster
/// client, RedisInsight, proxies), so where a command means what it means
/// in redis-server 7.0, it is described with the same flags, categories,
/// tips and key specs; flags about states this node never has (loading,
/// stale, scripts) are left out.
struct CommandDescription {
    struct KeySpec {
        var flags: [StaticString]
        var lastKey: Int = 0
        var keyStep: Int = 1
    }

    var flags: [StaticString]
    var categories: [StaticString]
    var tips: [StaticString] = []
    var keySpec: KeySpec? = nil
    var summary: String
    var since: StaticString
    var group: StaticString
    var complexity: StaticString
}

extension RESPCommand {
    var commandDescription: CommandDescription {
        switch self {
        case .ping:
            return .init(flags: ["fast"], categories: ["@fast", "@connection"],
                         tips: ["request_policy:all_shards", "response_policy:all_succeeded"],
                         summary: "Answers PONG, or the message given", since: "1.0.0", group: "connection", complexity: "O(1)")
        case .echo:
            return .init(flags: ["fast"], categories: ["@fast", "@connection"],
                         summary: "Answers the message given", since: "1.0.0", group: "connection", complexity: "O(1)")
        case .hello:
            return .init(flags: ["fast", "no_auth"], categories: ["@fast", "@connection"],
                         summary: "Chooses RESP2 or RESP3, optionally logs in and names the connection", since: "6.0.0",
                         group: "connection", complexity: "O(1)")
        case .auth:
            return .init(flags: ["fast", "no_auth"], categories: ["@fast", "@connection"],
                         summary: "Logs the connection in", since: "1.0.0", group: "connection", complexity: "O(1)")
        case .select:
            return .init(flags: ["fast"], categories: ["@fast", "@connection"],
                         summary: "Selects the database (there is one: 0)", since: "1.0.0", group: "connection", complexity: "O(1)")
        case .quit:
            return .init(flags: ["fast", "no_auth"], categories: ["@fast", "@connection"],
                         summary: "Closes the connection once the replies before it are sent", since: "1.0.0", group: "connection", complexity: "O(1)")
        case .client:
            return .init(flags: [], categories: ["@slow"],
                         summary: "Names, identifies and describes the connection", since: "2.4.0", group: "connection", complexity: "Depends on subcommand.")
        case .command:
            return .init(flags: [], categories: ["@slow", "@connection"], tips: ["nondeterministic_output_order"],
                         summary: "Describes the commands this node answers", since: "2.8.13", group: "server", complexity: "O(N) over N commands")
        case .info:
            return .init(flags: [], categories: ["@slow", "@dangerous"],
                         tips: ["nondeterministic_output", "request_policy:all_shards", "response_policy:special"],
                         summary: "Reports the node's state and counters by section", since: "1.0.0", group: "server", complexity: "O(1)")
        case .config:
            return .init(flags: [], categories: ["@slow"],
                         summary: "Reads the node's settings", since: "2.0.0", group: "server", complexity: "Depends on subcommand.")
        case .time:
            return .init(flags: ["fast"], categories: ["@fast"], tips: ["nondeterministic_output"],
                         summary: "Answers the node's clock as seconds and microseconds", since: "2.6.0", group: "server", complexity: "O(1)")
        case .get:
            return keyed(["readonly", "fast"], ["@read", "@string", "@fast"], ["RO", "access"],
                         "Answers the value of a key", "1.0.0", "string", "O(1)")
        case .set:
            return keyed(["write", "denyoom"], ["@write", "@string", "@slow"], ["RW", "access", "update", "variable_flags"],
                         "Sets a key's value, with an expiry and conditions", "1.0.0", "string", "O(1)")
        case .setnx:
            return keyed(["write", "denyoom", "fast"], ["@write", "@string", "@fast"], ["OW", "insert"],
                         "Sets a key's value when the key does not exist", "1.0.0", "string", "O(1)")
        case .setex, .psetex:
            return keyed(["write", "denyoom"], ["@write", "@string", "@slow"], ["OW", "update"],
                         self == .setex ? "Sets a key's value and its expiry in seconds" : "Sets a key's value and its expiry in milliseconds",
                         self == .setex ? "2.0.0" : "2.6.0", "string", "O(1)")
        case .getdel:
            return keyed(["write", "fast"], ["@write", "@string", "@fast"], ["RW", "access", "delete"],
                         "Answers a key's value and deletes the key", "6.2.0", "string", "O(1)")
        case .getex:
            return keyed(["write", "fast"], ["@write", "@string", "@fast"], ["RW", "access", "update"],
                         "Answers a key's value and sets or removes its expiry", "6.2.0", "string", "O(1)")
        case .expire, .pexpire, .expireat, .pexpireat:
            let since: StaticString = self == .expire ? "1.0.0" : self == .expireat ? "1.2.0" : "2.6.0"
            return keyed(["write", "fast"], ["@keyspace", "@write", "@fast"], ["RW", "update"],
                         "Sets a key's expiry, relative or as a unix time, in seconds or milliseconds", since, "generic", "O(1)")
        case .ttl, .pttl:
            var described = keyed(["readonly", "fast"], ["@keyspace", "@read", "@fast"], ["RO", "access"],
                                    self == .ttl ? "Answers a key's time to live in seconds" : "Answers a key's time to live in milliseconds",
                                    self == .ttl ? "1.0.0" : "2.6.0", "generic", "O(1)")
            described.tips = ["nondeterministic_output"]
            return described
        case .persist:
            return keyed(["write", "fast"], ["@keyspace", "@write", "@fast"], ["RW", "update"],
                         "Removes a key's expiry", "2.2.0", "generic", "O(1)")
        case .incr, .decr, .incrby, .decrby:
            return keyed(["write", "denyoom", "fast"], ["@write", "@string", "@fast"], ["RW", "access", "update"],
                         "Adds to or subtracts from a key's integer value", "1.0.0", "string", "O(1)")
        case .append:
            return keyed(["write", "denyoom", "fast"], ["@write", "@string", "@fast"], ["RW", "insert"],
                         "Appends to a key's value", "2.0.0", "string", "O(1) amortized; the value is copied once")
        case .strlen:
            return keyed(["readonly", "fast"], ["@read", "@string", "@fast"], ["RO"],
                         "Answers the length of a key's value", "2.2.0", "string", "O(1)")
        case .type:
            return keyed(["readonly", "fast"], ["@keyspace", "@read", "@fast"], ["RO"],
                         "Answers the type of a key's value (string)", "1.0.0", "generic", "O(1)")
        case .mget:
            var described = keyed(["readonly", "fast"], ["@read", "@string", "@fast"], ["RO", "access"],
                                    "Answers the values of several keys", "1.0.0", "string", "O(N) over N keys")
            described.tips = ["request_policy:multi_shard"]
            described.keySpec?.lastKey = -1
            return described
        case .mset:
            var described = keyed(["write", "denyoom"], ["@write", "@string", "@slow"], ["OW", "update"],
                                    "Sets several keys' values", "1.0.1", "string", "O(N) over N keys")
            described.tips = ["request_policy:multi_shard", "response_policy:all_succeeded"]
            described.keySpec?.lastKey = -1
            described.keySpec?.keyStep = 2
            return described
        case .del, .unlink, .exists:
            let flags: [StaticString] = self == .del ? ["write"] : self == .unlink ? ["write", "fast"] : ["readonly", "fast"]
            let categories: [StaticString] = self == .del ? ["@keyspace", "@write", "@slow"]
                : self == .unlink ? ["@keyspace", "@write", "@fast"] : ["@keyspace", "@read", "@fast"]
            var described = keyed(flags, categories, self == .exists ? ["RO"] : ["RM", "delete"],
                                    self == .exists ? "Counts the keys that exist" : "Deletes keys",
                                    self == .exists ? "1.0.0" : self == .del ? "1.0.0" : "4.0.0", "generic",
                                    "O(N) over N keys")
            described.tips = ["request_policy:multi_shard", "response_policy:agg_sum"]
            described.keySpec?.lastKey = -1
            return described
        case .dbsize:
            return .init(flags: ["readonly", "fast"], categories: ["@keyspace", "@read", "@fast"],
                         tips: ["request_policy:all_shards", "response_policy:agg_sum"],
                         summary: "Answers the number of keys", since: "1.0.0", group: "server", complexity: "O(1)")
        case .flushall, .flushdb:
            return .init(flags: ["write"], categories: ["@keyspace", "@write", "@slow", "@dangerous"],
                         tips: ["request_policy:all_shards", "response_policy:all_succeeded"],
                         summary: "Deletes every key", since: "1.0.0", group: "server", complexity: "O(N) over N keys; with ASYNC, O(1) here and the freeing in the background")
        case .scan:
            return .init(flags: ["readonly"], categories: ["@keyspace", "@read", "@slow"],
                         tips: ["nondeterministic_output", "request_policy:special"],
                         summary: "Iterates over the keys, a page per call", since: "2.8.0", group: "generic",
                         complexity: "O(COUNT) per call, O(N) for a full iteration over N keys")
        case .getset:
            return keyed(["write", "denyoom", "fast"], ["@write", "@string", "@fast"], ["RW", "access", "update"],
                         "Sets a key's value and answers the old one", "1.0.0", "string", "O(1)")
        case .incrbyfloat:
            return keyed(["write", "denyoom", "fast"], ["@write", "@string", "@fast"], ["RW", "access", "update"],
                         "Adds a floating point number to a key's value", "2.6.0", "string", "O(1)")
        case .getrange, .substr:
            return keyed(["readonly"], ["@read", "@string", "@slow"], ["RO", "access"],
                         "Answers a substring of a key's value", self == .substr ? "1.0.0" : "2.4.0", "string",
                         "O(N) over the N bytes answered")
        case .setrange:
            return keyed(["write", "denyoom"], ["@write", "@string", "@slow"], ["RW", "update"],
                         "Overwrites part of a key's value from an offset", "2.2.0", "string",
                         "O(1), not counting the copy of the new bytes")
        case .expiretime, .pexpiretime:
            return keyed(["readonly", "fast"], ["@keyspace", "@read", "@fast"], ["RO", "access"],
                         self == .expiretime ? "Answers a key's expiry as a Unix time in seconds"
                             : "Answers a key's expiry as a Unix time in milliseconds",
                         "7.0.0", "generic", "O(1)")
        case .rename, .renamenx, .copy:
            var described = keyed(self == .renamenx ? ["write", "fast"] : self == .copy ? ["write", "denyoom"] : ["write"],
                                  self == .renamenx ? ["@keyspace", "@write", "@fast"] : ["@keyspace", "@write", "@slow"],
                                  self == .copy ? ["RO", "access"] : ["RW", "access", "delete"],
                                  self == .copy ? "Copies a key's value and expiry to another key"
                                      : self == .rename ? "Renames a key" : "Renames a key when the new name is free",
                                  self == .copy ? "6.2.0" : "1.0.0", "generic", "O(1) here (strings only)")
            described.keySpec?.lastKey = 1
            return described
        case .msetnx:
            var described = keyed(["write", "denyoom"], ["@write", "@string", "@slow"], ["OW", "insert"],
                                  "Sets several keys' values when none of them exists", "1.0.1", "string", "O(N) over N keys")
            described.keySpec?.lastKey = -1
            described.keySpec?.keyStep = 2
            return described
        case .keys:
            return .init(flags: ["readonly"], categories: ["@keyspace", "@read", "@slow", "@dangerous"],
                         tips: ["request_policy:all_shards", "nondeterministic_output_order"],
                         summary: "Answers every key that matches a pattern (walks the whole keyspace)", since: "1.0.0",
                         group: "generic", complexity: "O(N) over the N keys of the node")
        case .randomkey:
            return .init(flags: ["readonly"], categories: ["@keyspace", "@read", "@slow"],
                         tips: ["request_policy:all_shards", "nondeterministic_output"],
                         summary: "Answers a key chosen at random", since: "1.0.0", group: "generic", complexity: "O(1)")
        case .object:
            return .init(flags: [], categories: ["@slow"],
                         summary: "Inspects how a key's value is kept", since: "2.2.3", group: "generic", complexity: "Depends on subcommand.")
        case .memory:
            return .init(flags: [], categories: ["@slow"],
                         summary: "Reports memory use", since: "4.0.0", group: "server", complexity: "Depends on subcommand.")
        case .slowlog:
            return .init(flags: [], categories: ["@slow"],
                         summary: "Reads and resets the log of slow commands", since: "2.2.12", group: "server", complexity: "Depends on subcommand.")
        case .latency:
            return .init(flags: [], categories: ["@slow"],
                         summary: "Reads the latency monitor's events", since: "2.8.13", group: "server", complexity: "Depends on subcommand.")
        case .wait:
            return .init(flags: ["noscript"], categories: ["@slow", "@connection"],
                         tips: ["request_policy:all_shards", "response_policy:agg_min"],
                         summary: "Waits until earlier writes reach replicas (answers as a node with none)", since: "3.0.0",
                         group: "generic", complexity: "O(1)")
        case .unknown:
            return .init(flags: [], categories: [], summary: "", since: "", group: "", complexity: "")
        }
    }

    private func keyed(_ flags: [StaticString], _ categories: [StaticString], _ keyFlags: [StaticString],
                       _ summary: String, _ since: StaticString, _ group: StaticString, _ complexity: StaticString) -> CommandDescription {
        .init(flags: flags, categories: categories, keySpec: .init(flags: keyFlags),
              summary: summary, since: since, group: group, complexity: complexity)
    }
}
