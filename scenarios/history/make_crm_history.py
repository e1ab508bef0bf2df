"""Make the sample CRM stage history `crm_events.csv` from `crm_truth.yaml`.

    python scenarios/history/make_crm_history.py

One replication of the truth scenario in funnelsim's own engine, written as the rows of a
stage-history export (lead_id,channel,stage,entered_at[,value]) — the shape of HubSpot
deal-stage history and Salesforce opportunity-history exports. Fit it as of a date to hold
out what comes after:

    funnelsim fit --events scenarios/history/crm_events.csv --as-of 2027-06-30 --out fitted/
"""

from pathlib import Path

from funnelsim import load_scenario
from funnelsim.fit.synthetic import write_history

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    rows = write_history(load_scenario(HERE / "crm_truth.yaml"), HERE / "crm_events.csv", seed=7)
    print(f"wrote {rows:,} rows to {HERE / 'crm_events.csv'}")
