from services.deadline_monitor.app import main

main()
