#if canImport(Glibc)
import Glibc
#endif

/// A serial executor that runs its jobs on one dedicated thread.
///
/// ESYS is blocking (socket or device I/O, and TPM commands that take milliseconds to
/// seconds). Running the `TPM` actor here keeps those waits off Swift's cooperative pool,
/// whose few threads the rest of the process (TLS, HTTP, the measurement engine) needs.
final class TPMThreadExecutor: SerialExecutor, @unchecked Sendable {
    // pthread objects must not move: allocated once, never stored inline in a Swift property.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var jobs: [UnownedJob] = []   // guarded by `mutex`
    private var stopping = false          // guarded by `mutex`

    init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)

        // The thread holds a strong reference until it has drained its queue after `shutdown()`.
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            let executor = Unmanaged<TPMThreadExecutor>.fromOpaque(raw).takeRetainedValue()
            executor.run()
            return nil
        }, context)
        precondition(rc == 0, "pthread_create failed (\(rc)): cannot start the TPM thread")
        pthread_detach(thread)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        pthread_mutex_lock(mutex)
        jobs.append(unowned)
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Lets the thread finish the jobs already queued and exit.
    func shutdown() {
        pthread_mutex_lock(mutex)
        stopping = true
        pthread_cond_signal(condition)
        pthread_mutex_unlock(mutex)
    }

    private func run() {
        while true {
            pthread_mutex_lock(mutex)
            while jobs.isEmpty && !stopping {
                pthread_cond_wait(condition, mutex)
            }
            if jobs.isEmpty {   // stopping, and nothing left to run
                pthread_mutex_unlock(mutex)
                return
            }
            let batch = jobs
            jobs.removeAll(keepingCapacity: true)
            pthread_mutex_unlock(mutex)
            for job in batch {
                job.runSynchronously(on: asUnownedSerialExecutor())
            }
        }
    }
}
