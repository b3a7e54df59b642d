/// When the loop's periodic work is next due, and where the drain stands.
/// Times are the reactor's monotonic milliseconds.
///
/// Invariant: `maintenanceDue` is set only by the maintenance timer's event
/// and cleared only by the maintenance step it triggers; `countedAsDrained`
/// goes from false to true once, when this reactor has added itself to the
/// node's drained count.
struct LoopSchedule {
    var nextMaintenanceMs: Int64 = 0
    var maintenanceDue = false
    var nextTimeoutCheckMs: Int64 = 0
    /// Stats are published once per tick of the coarse clock.
    var lastPublishedMs: Int64 = 0
    /// A pass ran since the last publish: its changes (a count, memory)
    /// are not visible to readers yet.
    var passSincePublish = false
    /// Rotation of the active expiry sweep over the owned shards.
    var sweepShardCursor = 0
    /// Set when draining starts (the listener closes): past it, whatever
    /// connections still owe is dropped.
    var drainDeadlineMs: Int64 = 0
    var countedAsDrained = false
}
