"""Print this machine's isolation level and which guards hold: python -m shapedce.tasks.sandbox"""

from . import FLAG, allow_unisolated, guards, isolation

iso = isolation()
print(f"isolation level: {iso.level}" + (f" ({iso.gaps})" if iso.gaps else ""))
if iso.level != "full":
    print(f"(probing with {FLAG} for this report)")
    allow_unisolated()
for name, held in guards().items():
    print(f"{name:<16} {'enforced' if held else 'NOT enforced'}")
