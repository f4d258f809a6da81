"""Billing (SEED §2.4, protocol reference §2.4): the documented rule, the voice-creation cost and the
:class:`BillingPlan` a run shows before it spends money."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BillingPlan", "BILLING_RULE", "VOICE_CREATION_PRICE_USD", "FREE_VOICE_CREATIONS", "FREE_QUOTA_DAYS",
           "voice_creation_cost"]

#: Voice creation price and free quota (SEED §2.4): $0.01 per created voice after 1,000 free creations in 90 days.
VOICE_CREATION_PRICE_USD = 0.01
FREE_VOICE_CREATIONS = 1000
FREE_QUOTA_DAYS = 90
#: The billing rule of voice enrollment as documented (SEED §2.4; ../shared/reference/dashscope-protocol.md §2.4).
BILLING_RULE = (f"Voice creation is billed at ${VOICE_CREATION_PRICE_USD:.2f} per created voice after a free quota "
                f"of {FREE_VOICE_CREATIONS:,} creations within {FREE_QUOTA_DAYS} days of activation (failed creations "
                "are not billed; deleting a voice does not restore the quota); realtime conversations are billed as normal realtime tokens "
                "(SEED §2.4: Alibaba Cloud's Qwen Voice Cloning API reference). Check your region's price page.")


@dataclass(frozen=True)
class BillingPlan:
    """What a run would do now: voices to create (registry misses) and turns to run.

    ``billable``: the workspace talks to the cloud (``settings.is_cloud``); the local service is free."""

    billable: bool
    region: str
    turns_to_run: int
    turns_planned: int
    voices_to_create: tuple = ()
    voices_reused: tuple = ()
    models: tuple = ()

    def text(self) -> str:
        """The notice shown before a billable run (the billing rule cited, no price invented)."""
        n_new = len(self.voices_to_create)
        where = f"the {self.region} region (real DashScope service, billed)" if self.billable \
            else "the local service (free, simulated latencies)"
        lines = [f"This run talks to {where}.",
                 f"It will create {n_new} voice(s) not already in the registry"
                 + (" (" + ", ".join(f"{v} for {m}" for v, m in self.voices_to_create) + ")" if n_new else "")
                 + f", reuse {len(self.voices_reused)}, and run {self.turns_to_run} realtime turn(s) "
                 f"({self.turns_planned} planned in all) on {', '.join(self.models)}."]
        if self.billable:
            lines.append(BILLING_RULE)
        return "\n".join(lines)

    @property
    def needs_confirmation(self) -> bool:
        """True when the run would spend money: billable and something to create or run."""
        return self.billable and (self.turns_to_run > 0 or bool(self.voices_to_create))


def voice_creation_cost(n_voices: int, *, free_left: int = FREE_VOICE_CREATIONS) -> float:
    """USD billed for creating ``n_voices`` voices by :data:`BILLING_RULE` when ``free_left`` creations of the
    free quota remain (failed creations are not billed)."""
    return max(0, int(n_voices) - max(0, int(free_left))) * VOICE_CREATION_PRICE_USD
