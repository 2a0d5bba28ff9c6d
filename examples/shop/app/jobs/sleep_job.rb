# A job that takes a while: what a deploy must not kill.
class SleepJob
  @queue = :deploytest

  def self.perform(seconds, tag = nil)
    sleep seconds.to_f
  end
end
